//! How far a map can be trusted, measured by what the model does when the image is changed
//! along the map.
//!
//! - **Confidence drop / increase** (Chattopadhyay et al., Grad-CAM++, "Average Drop" and
//!   "Increase in Confidence", for one image): the label's probability on the image multiplied
//!   by its min–max normalised map, against the probability on the image. One forward per map.
//! - **Deletion / insertion AUC** (Petsiuk et al., RISE): the most salient pixels first are
//!   filled in from the pixels around them (deletion: RISE's black would put a hole the model
//!   never saw in place of the evidence) or put back onto a blurred copy (insertion), in
//!   [`AUC_STEPS`] equal steps; the area under the probability curve. A faithful map makes the
//!   deletion curve fall fast (low AUC) and the insertion curve rise fast (high AUC).
//!   2 × (`AUC_STEPS` + 1) forwards per map.
//!
//! Maps are compared at the model's input resolution; every forward is batched.

use tch::{Kind, Tensor};

use super::{EngineError, model::LoadedModel};

pub use xcam_shared::db::results::FaithfulnessScores;

/// Steps of the deletion and insertion curves (5 % of the pixels each).
pub const AUC_STEPS: i64 = 20;

/// Images per forward of the perturbed copies.
const CHUNK: i64 = 32;

/// One map to score: the input it explains (C×H×W, on the model's device), the label, the map
/// at the target layer's resolution (h×w) and the label's probability on the unchanged input.
pub struct MapToScore<'a> {
    pub input: Tensor,
    pub label: usize,
    pub map: &'a Tensor,
    pub probability: f32,
}

/// Scores every map, with the deletion and insertion AUC when `curves`; the order of `maps`
/// is kept.
pub fn score(
    model: &LoadedModel,
    maps: &[MapToScore<'_>],
    curves: bool,
) -> Result<Vec<FaithfulnessScores>, EngineError> {
    if maps.is_empty() {
        return Ok(Vec::new());
    }
    let device = model.device;
    let x = Tensor::stack(
        &maps
            .iter()
            .map(|m| m.input.shallow_clone())
            .collect::<Vec<_>>(),
        0,
    );
    let (height, width) = (x.size()[2], x.size()[3]);
    let saliency = Tensor::stack(
        &maps
            .iter()
            .map(|m| m.map.to_device(device))
            .collect::<Vec<_>>(),
        0,
    );
    let saliency = at_input_size(&normalised(&saliency), height, width);
    let labels: Vec<usize> = maps.iter().map(|m| m.label).collect();

    let masked = scores_of(model, &(&x * &saliency), &labels, 1)?;
    let mut scores: Vec<FaithfulnessScores> = maps
        .iter()
        .zip(masked)
        .map(|(m, masked)| {
            let p = m.probability;
            FaithfulnessScores {
                masked_probability: masked,
                confidence_drop: if p > 0.0 {
                    (p - masked).max(0.0) / p
                } else {
                    0.0
                },
                confidence_increase: masked > p,
                deletion_auc: None,
                insertion_auc: None,
            }
        })
        .collect();
    if curves {
        let (deletion, insertion) = self::curves(model, &x, &saliency, &labels)?;
        for ((s, d), i) in scores.iter_mut().zip(deletion).zip(insertion) {
            s.deletion_auc = Some(d);
            s.insertion_auc = Some(i);
        }
    }
    Ok(scores)
}

/// Deletion and insertion AUC of arbitrary maps (M×h×w) over images (M×1×H×W levels, see
/// [`super::preprocess`]): what [`score`] computes with `curves`, for comparing a map with
/// others (random, a blob).
pub fn deletion_insertion(
    model: &LoadedModel,
    levels: &Tensor,
    maps: &Tensor,
    labels: &[usize],
) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
    let x = model.inputs(levels);
    let (height, width) = (x.size()[2], x.size()[3]);
    let saliency = at_input_size(&normalised(&maps.to_device(model.device)), height, width);
    curves(model, &x, &saliency, labels)
}

/// Per map, (x − min) / (max − min + ε), as pytorch-grad-cam scales a CAM before resizing.
fn normalised(maps: &Tensor) -> Tensor {
    let flat = maps.flatten(1, -1);
    let low = flat.amin(&[1i64][..], true);
    let shifted = flat - low;
    let high = shifted.amax(&[1i64][..], true);
    (shifted / (high + 1e-7)).view_as(maps)
}

/// M×h×w → M×1×H×W, bilinear (half-pixel centres, like cv2's INTER_LINEAR).
fn at_input_size(maps: &Tensor, height: i64, width: i64) -> Tensor {
    maps.unsqueeze(1)
        .upsample_bilinear2d([height, width], false, None, None)
}

/// The probability of each row's label on `x`, whose rows are `repeat` consecutive copies per
/// label.
fn scores_of(
    model: &LoadedModel,
    x: &Tensor,
    labels: &[usize],
    repeat: i64,
) -> Result<Vec<f32>, EngineError> {
    let rows = x.size()[0];
    let mut out = Vec::with_capacity(rows as usize);
    for start in (0..rows).step_by(CHUNK as usize) {
        let chunk = x.narrow(0, start, CHUNK.min(rows - start));
        let p = model.probabilities(&chunk)?;
        for (j, row) in (start..start + chunk.size()[0]).enumerate() {
            let label = labels[(row / repeat) as usize] as i64;
            out.push(p.double_value(&[j as i64, label]) as f32);
        }
    }
    Ok(out)
}

/// Deletion and insertion AUC per map. `saliency` is M×1×H×W in [0, 1]. Maps go a few at a
/// time, so memory stays at a few batches of perturbed copies whatever the batch.
fn curves(
    model: &LoadedModel,
    x: &Tensor,
    saliency: &Tensor,
    labels: &[usize],
) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
    let (m, _, _, _) = x
        .size4()
        .map_err(|e| EngineError::Inference(e.to_string()))?;
    let per_chunk = (CHUNK / (AUC_STEPS + 1)).max(1);
    let (mut deletion, mut insertion) = (Vec::new(), Vec::new());
    for start in (0..m).step_by(per_chunk as usize) {
        let n = per_chunk.min(m - start);
        let range = start as usize..(start + n) as usize;
        let (d, i) = curves_of(
            model,
            &x.narrow(0, start, n),
            &saliency.narrow(0, start, n),
            &labels[range],
        )?;
        deletion.extend(d);
        insertion.extend(i);
    }
    Ok((deletion, insertion))
}

fn curves_of(
    model: &LoadedModel,
    x: &Tensor,
    saliency: &Tensor,
    labels: &[usize],
) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
    let (m, c, h, w) = x
        .size4()
        .map_err(|e| EngineError::Inference(e.to_string()))?;
    let pixels = h * w;
    let steps = AUC_STEPS + 1;
    // Rank of every pixel, 0 for the most salient.
    let order = saliency.view([m, pixels]).argsort(1, true);
    let rank = order.argsort(1, false);
    // kept[s] marks the pixels not yet removed after step s (of AUC_STEPS).
    let cut = Tensor::arange(steps, (Kind::Int64, x.device())) * pixels / AUC_STEPS;
    let kept = rank
        .unsqueeze(1)
        .ge_tensor(&cut.view([1, steps, 1]))
        .to_kind(Kind::Float)
        .view([m * steps, 1, h, w]);
    let canvas = blur(x).unsqueeze(1);
    let x = x.unsqueeze(1);
    let copies = |t: &Tensor| {
        t.expand([m, steps, c, h, w], false)
            .reshape([m * steps, c, h, w])
    };
    let (xs, canvases) = (copies(&x), copies(&canvas));
    let deleted = &xs * &kept + imputed(&xs, &kept, &canvases) * (1.0 - &kept);
    let inserted = &xs * (1.0 - &kept) + &canvases * &kept;
    let auc = |batch: Tensor| -> Result<Vec<f32>, EngineError> {
        let p = scores_of(model, &batch, labels, steps)?;
        Ok(p.chunks(steps as usize).map(trapezoid).collect())
    };
    Ok((auc(deleted)?, auc(inserted)?))
}

/// What deletion puts in place of a removed pixel: the mean of the kept pixels around it (an
/// eighth of the image's side), so a finding is filled in from its surroundings rather than
/// replaced by a black hole the model has never seen; the blurred image where nothing nearby
/// is kept.
fn imputed(x: &Tensor, kept: &Tensor, canvas: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let k = [(h / 8).max(1) | 1, (w / 8).max(1) | 1];
    let pad = [k[0] / 2, k[1] / 2];
    let local = |t: &Tensor| t.avg_pool2d(k, [1, 1], pad, false, false, None::<i64>);
    let weight = local(kept);
    let mean = local(&(x * kept)) / weight.clamp_min(1e-6);
    mean.where_self(&weight.gt(1e-3), canvas)
}

/// Insertion's canvas: the image averaged over 1/16 of each side and scaled back up.
fn blur(x: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    x.adaptive_avg_pool2d([(h / 16).max(1), (w / 16).max(1)])
        .upsample_bilinear2d([h, w], false, None, None)
}

/// Area under a curve sampled at equal steps over [0, 1].
fn trapezoid(values: &[f32]) -> f32 {
    let n = values.len();
    if n < 2 {
        return values.first().copied().unwrap_or(0.0);
    }
    let inner: f32 = values.iter().sum::<f32>() - (values[0] + values[n - 1]) / 2.0;
    inner / (n - 1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_of_a_line_is_its_mean() {
        assert!((trapezoid(&[1.0, 0.5, 0.0]) - 0.5).abs() < 1e-6);
        assert!((trapezoid(&[1.0; 21]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn normalised_maps_span_zero_to_one() {
        let maps = Tensor::from_slice(&[2.0f32, 4.0, 6.0, 8.0, 0.0, 0.0, 0.0, 0.0]).view([2, 2, 2]);
        let n = Vec::<f32>::try_from(normalised(&maps).flatten(0, -1)).unwrap();
        assert!((n[0]).abs() < 1e-6 && (n[3] - 1.0).abs() < 1e-6);
        assert!(
            n[4..].iter().all(|v| v.abs() < 1e-6),
            "a blank map stays blank"
        );
    }
}
