//! `results`: one row per item that succeeded. Written as an upsert keyed by the item, so a job
//! delivered twice still leaves exactly one result.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder, types::Json};
use uuid::Uuid;

use crate::{
    heatmap::{Geometry, Grid},
    status::ItemStatus,
    targets::Method,
};

/// One explained label: what the worker computes, what a result stores (as JSON in `cams`, its
/// grid's values in `grids`), what `explain` writes and what the API answers (as `Cam`). One type
/// for all four, so they cannot drift apart.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Cam)]
pub struct StoredCam {
    pub label: String,
    pub method: Method,
    /// Pixel [x, y] of the map's maximum in the original image; `null` for a blank map.
    pub peak: Option<[u32; 2]>,
    /// [x0, y0, x1, y1) of the largest region at or above half the peak; `null` for a blank map.
    pub bbox: Option<[u32; 4]>,
    /// The map's maximum before normalisation: how strong the evidence was. 0 means the label's
    /// score has no positive evidence anywhere (a blank map).
    pub raw_max: f32,
    /// The map at the target layer's resolution: overlays and `.npy` maps are drawn from it.
    pub grid: Grid,
    /// Whether the label's probability reached its threshold; `null` in results stored before
    /// xcam said so.
    #[serde(default)]
    pub positive: Option<bool>,
    /// How far the map drove the score; `null` unless faithfulness was asked for.
    #[serde(default)]
    pub faithfulness: Option<FaithfulnessScores>,
}

/// Faithfulness of one map (see the README's "How far to trust a map").
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FaithfulnessScores {
    /// The label's probability on the image multiplied by its normalised map.
    pub masked_probability: f32,
    /// max(0, p − masked) / p: the share of the probability lost when only the map is kept
    /// (lower is better).
    pub confidence_drop: f32,
    /// Whether keeping only the map raised the probability.
    pub confidence_increase: bool,
    /// Area under the probability as the most salient pixels are deleted first (lower is
    /// better); with `faithfulness=full` only.
    pub deletion_auc: Option<f32>,
    /// Area under the probability as the most salient pixels are put back first onto a
    /// blurred image (higher is better); with `faithfulness=full` only.
    pub insertion_auc: Option<f32>,
}

#[derive(Debug, Clone)]
pub struct NewResult {
    pub item_id: Uuid,
    pub batch_id: Uuid,
    pub model_name: String,
    pub model_version: String,
    /// Label → probability.
    pub predictions: serde_json::Value,
    pub top_label: String,
    pub top_probability: f32,
    pub method: Method,
    pub cams: Vec<StoredCam>,
    pub positive_labels: Vec<String>,
    pub ood_score: Option<f32>,
    pub ood_threshold: Option<f32>,
    pub geometry: Geometry,
    pub device: String,
    pub worker_id: String,
    pub attempt: i32,
    pub processing_ms: f32,
    pub queue_wait_ms: f32,
}

/// Writes the results of items this transaction has locked (their outcomes are being recorded),
/// in one statement. An upsert: a job delivered twice still leaves one result per item.
pub async fn upsert_all(db: &mut PgConnection, results: &[&NewResult]) -> sqlx::Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let split: Vec<_> = results.iter().map(|r| split_grids(&r.cams)).collect();
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO results (item_id, batch_id, model_name, model_version, predictions, top_label, \
         top_probability, method, cams, grids, image_width, image_height, letterbox_side, device, \
         worker_id, attempt, processing_ms, queue_wait_ms, positive_labels, ood_score, ood_threshold) ",
    );
    insert.push_values(results.iter().zip(&split), |mut row, (r, (cams, grids))| {
        row.push_bind(r.item_id)
            .push_bind(r.batch_id)
            .push_bind(&r.model_name)
            .push_bind(&r.model_version)
            .push_bind(&r.predictions)
            .push_bind(&r.top_label)
            .push_bind(r.top_probability)
            .push_bind(r.method.as_str())
            .push_bind(Json(cams))
            .push_bind(grids)
            .push_bind(r.geometry.width as i32)
            .push_bind(r.geometry.height as i32)
            .push_bind(r.geometry.square as i32)
            .push_bind(&r.device)
            .push_bind(&r.worker_id)
            .push_bind(r.attempt)
            .push_bind(r.processing_ms)
            .push_bind(r.queue_wait_ms)
            .push_bind(Json(&r.positive_labels))
            .push_bind(r.ood_score)
            .push_bind(r.ood_threshold);
    });
    insert.push(
        r#" ON CONFLICT (item_id) DO UPDATE SET
               predictions = EXCLUDED.predictions, top_label = EXCLUDED.top_label,
               top_probability = EXCLUDED.top_probability, method = EXCLUDED.method, cams = EXCLUDED.cams,
               grids = EXCLUDED.grids, letterbox_side = EXCLUDED.letterbox_side, device = EXCLUDED.device,
               worker_id = EXCLUDED.worker_id, attempt = EXCLUDED.attempt,
               processing_ms = EXCLUDED.processing_ms, queue_wait_ms = EXCLUDED.queue_wait_ms,
               positive_labels = EXCLUDED.positive_labels, ood_score = EXCLUDED.ood_score,
               ood_threshold = EXCLUDED.ood_threshold, updated_at = now()"#,
    );
    insert.build().execute(db).await?;
    Ok(())
}

/// An item joined with its result (if any): one row of a batch's report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    pub item_id: Uuid,
    pub entry_index: i32,
    pub entry_name: String,
    pub sha256: Option<String>,
    pub status: ItemStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub warnings: serde_json::Value,
    pub attempts: i32,
    pub finished_at: Option<DateTime<Utc>>,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    pub predictions: Option<serde_json::Value>,
    pub top_label: Option<String>,
    pub top_probability: Option<f32>,
    pub method: Option<String>,
    pub cams: Option<Json<Vec<StoredCam>>>,
    pub image_width: Option<i32>,
    pub image_height: Option<i32>,
    pub device: Option<String>,
    pub worker_id: Option<String>,
    pub processing_ms: Option<f32>,
    pub queue_wait_ms: Option<f32>,
    pub positive_labels: Option<Json<Vec<String>>>,
    pub ood_score: Option<f32>,
    pub ood_threshold: Option<f32>,
}

/// What of each result's CAMs a report page carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cams {
    /// Every CAM with its grid (the JSON results).
    All,
    /// The first CAM, its grid left empty: all a CSV row shows, without moving the grids (most
    /// of a result's bytes) out of Postgres and through the JSON parser.
    FirstWithoutGrid,
}

/// A page of a batch's report in entry order, starting after entry `after`.
pub async fn report_page(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
    after: i32,
    limit: i64,
    cams: Cams,
) -> sqlx::Result<Vec<ReportRow>> {
    let rows = sqlx::query_as::<_, WithGrids<ReportRow>>(
        r#"SELECT i.id AS item_id, i.entry_index, i.entry_name, i.sha256, i.status, i.error_code, i.error_message,
                  i.warnings, i.attempts, i.finished_at, r.model_name, r.model_version, r.predictions,
                  r.top_label, r.top_probability, r.method,
                  CASE WHEN $4 OR r.report_cam IS NULL THEN r.cams
                       ELSE jsonb_build_array(r.report_cam)
                  END AS cams,
                  CASE WHEN $4 THEN r.grids END AS grids,
                  r.image_width, r.image_height,
                  r.device, COALESCE(r.worker_id, i.worker_id) AS worker_id, r.processing_ms, r.queue_wait_ms,
                  r.positive_labels, r.ood_score, r.ood_threshold
           FROM items i LEFT JOIN results r ON r.item_id = i.id
           WHERE i.batch_id = $1 AND i.entry_index > $2
           ORDER BY i.entry_index LIMIT $3"#,
    )
    .bind(batch_id)
    .bind(after)
    .bind(limit)
    .bind(cams == Cams::All)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|WithGrids { mut row, grids }| {
            if let Some(cams) = &mut row.cams {
                join_grids(&mut cams.0, grids)?;
            }
            Ok(row)
        })
        .collect()
}

/// An item's CAMs and how its image sat in the model's input: what drawing its maps takes.
pub async fn cams(
    db: impl PgExecutor<'_>,
    item_id: Uuid,
) -> sqlx::Result<Option<(Vec<StoredCam>, Geometry)>> {
    let row: Option<WithGrids<CamsRow>> = sqlx::query_as(
        "SELECT cams, grids, image_width, image_height, letterbox_side FROM results WHERE item_id = $1",
    )
    .bind(item_id)
    .fetch_optional(db)
    .await?;
    row.map(|WithGrids { row, grids }| {
        let mut cams = row.cams.0;
        join_grids(&mut cams, grids)?;
        let geometry = Geometry {
            width: row.image_width as u32,
            height: row.image_height as u32,
            square: row.letterbox_side as u32,
        };
        Ok((cams, geometry))
    })
    .transpose()
}

#[derive(sqlx::FromRow)]
struct CamsRow {
    cams: Json<Vec<StoredCam>>,
    image_width: i32,
    image_height: i32,
    letterbox_side: i32,
}

/// A row read with its result's `grids` (see `0013_grids_as_floats.sql`).
#[derive(sqlx::FromRow)]
struct WithGrids<T> {
    #[sqlx(flatten)]
    row: T,
    grids: Option<Vec<f32>>,
}

/// What a result stores of its CAMs: each without its grid's values (kept `h` and `w`), and
/// every CAM's values in order, as one array. Postgres reads a `real[]` as sent, where it parsed
/// every number of a grid written as JSON.
fn split_grids(cams: &[StoredCam]) -> (Vec<StoredCam>, Vec<f32>) {
    let values = cams
        .iter()
        .flat_map(|c| c.grid.values.iter().copied())
        .collect();
    let cams = cams
        .iter()
        .map(|c| StoredCam {
            label: c.label.clone(),
            grid: Grid {
                h: c.grid.h,
                w: c.grid.w,
                values: Vec::new(),
            },
            ..*c
        })
        .collect();
    (cams, values)
}

/// Puts [`split_grids`]' values back into their CAMs. A result recorded before `grids` existed
/// (`None`) already holds them in its CAMs.
fn join_grids(cams: &mut [StoredCam], grids: Option<Vec<f32>>) -> sqlx::Result<()> {
    let Some(grids) = grids else {
        return Ok(());
    };
    let mut rest = grids.as_slice();
    for cam in cams.iter_mut() {
        let values = cam
            .grid
            .h
            .checked_mul(cam.grid.w)
            .and_then(|n| rest.split_at_checked(n));
        let Some((values, after)) = values else {
            return Err(grids_mismatch());
        };
        cam.grid.values = values.to_vec();
        rest = after;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(grids_mismatch())
    }
}

fn grids_mismatch() -> sqlx::Error {
    sqlx::Error::Decode("a result's grids do not hold its CAMs' h × w values".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(label: &str, h: usize, w: usize, first: f32) -> StoredCam {
        StoredCam {
            label: label.into(),
            method: Method::GradCam,
            peak: Some([3, 4]),
            bbox: Some([1, 2, 5, 6]),
            raw_max: 2.5,
            grid: Grid {
                h,
                w,
                values: (0..h * w).map(|i| first + i as f32 * 0.25).collect(),
            },
            positive: Some(true),
            faithfulness: None,
        }
    }

    #[test]
    fn grids_split_and_join_back_to_the_same_cams() {
        let cams = vec![cam("opacity", 2, 3, 0.0), cam("nodule", 4, 4, 7.0)];
        let (mut skeletons, values) = split_grids(&cams);
        assert_eq!(values.len(), 6 + 16);
        assert!(skeletons.iter().all(|c| c.grid.values.is_empty()));
        assert_eq!((skeletons[1].grid.h, skeletons[1].grid.w), (4, 4));
        join_grids(&mut skeletons, Some(values)).unwrap();
        assert_eq!(skeletons, cams);
    }

    #[test]
    fn a_result_recorded_before_grids_keeps_its_cams() {
        let mut cams = vec![cam("opacity", 2, 2, 1.0)];
        join_grids(&mut cams, None).unwrap();
        assert_eq!(cams, vec![cam("opacity", 2, 2, 1.0)]);
    }

    #[test]
    fn grids_of_the_wrong_length_are_an_error_not_a_panic() {
        let (skeletons, values) = split_grids(&[cam("opacity", 2, 3, 0.0)]);
        for wrong in [values[..5].to_vec(), [values.clone(), vec![1.0]].concat()] {
            let mut cams = skeletons.clone();
            assert!(matches!(
                join_grids(&mut cams, Some(wrong)),
                Err(sqlx::Error::Decode(_))
            ));
        }
        let mut huge = skeletons;
        huge[0].grid.h = usize::MAX;
        assert!(join_grids(&mut huge, Some(values)).is_err());
    }
}
