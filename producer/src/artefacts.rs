//! An item's overlay and map, drawn from its stored grid when first asked for.
//!
//! A result keeps each CAM's grid (a few dozen numbers), not pixels: most overlays of a large
//! batch are never looked at, and a full-size float map of a radiograph is megabytes. An overlay
//! needs the original image decoded, so it is kept in the blob store once drawn; the `.npy` map
//! takes a millisecond to draw again and is not kept.

use bytes::Bytes;
use uuid::Uuid;
use xcam_shared::{
    blob::{self, BlobError},
    db::results::StoredCam,
    heatmap::{self, Geometry},
    imaging,
};

use crate::{error::ApiError, state::AppState};

/// The overlay PNG of one item's CAM: from the blob store if drawn before, else drawn now.
pub async fn overlay(
    state: &AppState,
    item: Uuid,
    image_key: &str,
    cam: &StoredCam,
    geometry: Geometry,
) -> Result<Bytes, ApiError> {
    let key = blob::derived_key(item, &cam.label, "overlay.png");
    match state.blobs.get(&key).await {
        Ok(png) => return Ok(png),
        Err(BlobError::NotFound { .. }) => {}
        Err(other) => return Err(other.into()),
    }
    let original = state.blobs.get(image_key).await?;
    let (grid, raw_max, limits) = (cam.grid.clone(), cam.raw_max, state.settings.image_limits);
    // Decoding and drawing are CPU work: a blocking thread, never the executor.
    let png = tokio::task::spawn_blocking(move || {
        let image = imaging::decode_with(&original, &limits)
            .map_err(|e| anyhow::anyhow!("the stored image no longer decodes: {e}"))?
            .image;
        anyhow::ensure!(
            (image.width, image.height) == (geometry.width, geometry.height),
            "the stored image is {}×{}, its result says {}×{}",
            image.width,
            image.height,
            geometry.width,
            geometry.height
        );
        let map = heatmap::full_map(&grid, raw_max, &geometry);
        Ok(heatmap::overlay_png(&image, &map)?)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(ApiError::Internal)?;
    let png = Bytes::from(png);
    // Two first requests at once both draw and store the same bytes; a failed store only costs
    // the next request a redraw.
    if let Err(e) = state.blobs.put(&key, png.clone()).await {
        tracing::warn!(%item, error = %e, "could not keep a drawn overlay");
    }
    Ok(png)
}

/// The map over the original image as a float32 `.npy`, drawn from the grid.
pub async fn map_npy(cam: &StoredCam, geometry: Geometry) -> Result<Bytes, ApiError> {
    let (grid, raw_max) = (cam.grid.clone(), cam.raw_max);
    let npy = tokio::task::spawn_blocking(move || {
        let map = heatmap::full_map(&grid, raw_max, &geometry);
        heatmap::npy_f32(&map, geometry.width, geometry.height)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Bytes::from(npy))
}

/// Whether a stored grid can be drawn over its geometry; a row that fails this is corrupt.
pub fn check(cam: &StoredCam, geometry: &Geometry) -> Result<(), ApiError> {
    let fits = geometry.width > 0
        && geometry.height > 0
        && (geometry.square == 0 || geometry.square >= geometry.width.max(geometry.height));
    if cam.grid.is_consistent() && fits {
        Ok(())
    } else {
        Err(ApiError::Internal(anyhow::anyhow!(
            "the stored map of label {} cannot be drawn ({}×{} grid of {} values over {geometry:?})",
            cam.label,
            cam.grid.h,
            cam.grid.w,
            cam.grid.values.len()
        )))
    }
}
