//! An item's overlay and map, drawn from its stored grid when first asked for.
//!
//! A result keeps each CAM's grid (a few dozen numbers), not pixels: most overlays of a large
//! batch are never looked at, and a full-size float map of a radiograph is megabytes. An overlay
//! needs the image's pixel plane decoded, so it is kept in the blob store once drawn; the `.npy`
//! map takes a millisecond to draw again and is not kept. The image itself is served too, as an
//! 8-bit PNG of its plane.

use bytes::Bytes;
use uuid::Uuid;
use xcam_shared::{
    blob::{self, BlobError, BlobStore},
    db::results::StoredCam,
    heatmap::{self, Geometry},
    imaging::plane,
};

/// Why an artefact cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtefactError {
    /// `not_found`: no such artefact (yet).
    #[error("{0}")]
    Missing(String),
    /// `internal`: what is stored cannot be drawn; the row or the blob is corrupt.
    #[error("{0}")]
    Corrupt(String),
    /// `unavailable`: the blob store does not answer.
    #[error("blob store: {0}")]
    Unavailable(#[source] BlobError),
}

impl ArtefactError {
    pub fn code(&self) -> &'static str {
        match self {
            ArtefactError::Missing(_) => "not_found",
            ArtefactError::Corrupt(_) => "internal",
            ArtefactError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<BlobError> for ArtefactError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound { key } => {
                ArtefactError::Missing(format!("artefact {key} is missing"))
            }
            other => ArtefactError::Unavailable(other),
        }
    }
}

/// Runs CPU work (decoding, drawing) on a blocking thread, never the executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArtefactError> + Send + 'static,
) -> Result<T, ArtefactError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ArtefactError::Corrupt(format!("drawing stopped: {e}")))?
}

/// An overlay, and whether this request drew (and stored) it rather than finding it stored.
pub struct Overlay {
    pub png: Bytes,
    pub drawn: bool,
}

/// The overlay PNG of one item's CAM: from the blob store if drawn before, else drawn now.
pub async fn overlay(
    blobs: &BlobStore,
    (batch, item): (Uuid, Uuid),
    image_key: &str,
    cam: &StoredCam,
    geometry: Geometry,
) -> Result<Overlay, ArtefactError> {
    let key = blob::derived_key(batch, item, &cam.label, "overlay.png");
    match blobs.get(&key).await {
        Ok(png) => return Ok(Overlay { png, drawn: false }),
        Err(BlobError::NotFound { .. }) => {}
        Err(other) => return Err(other.into()),
    }
    let original = blobs.get(image_key).await?;
    let (grid, raw_max) = (cam.grid.clone(), cam.raw_max);
    let png = blocking(move || {
        let image = plane::decode(&original).map_err(|e| {
            ArtefactError::Corrupt(format!("the stored image no longer decodes: {e}"))
        })?;
        if (image.width, image.height) != (geometry.width, geometry.height) {
            return Err(ArtefactError::Corrupt(format!(
                "the stored image is {}×{}, its result says {}×{}",
                image.width, image.height, geometry.width, geometry.height
            )));
        }
        let map = heatmap::full_map(&grid, raw_max, &geometry);
        heatmap::overlay_png(&image, &map)
            .map_err(|e| ArtefactError::Corrupt(format!("encoding the overlay: {e}")))
    })
    .await?;
    let png = Bytes::from(png);
    // Two first requests at once both draw and store the same bytes; a failed store only costs
    // the next request a redraw.
    if let Err(e) = blobs.put(&key, png.clone()).await {
        tracing::warn!(%item, error = %e, "could not keep a drawn overlay");
    }
    Ok(Overlay { png, drawn: true })
}

/// The map over the original image as a float32 `.npy`, drawn from the grid.
pub async fn map_npy(cam: &StoredCam, geometry: Geometry) -> Result<Bytes, ArtefactError> {
    let (grid, raw_max) = (cam.grid.clone(), cam.raw_max);
    let npy = blocking(move || {
        let map = heatmap::full_map(&grid, raw_max, &geometry);
        Ok(heatmap::npy_f32(&map, geometry.width, geometry.height))
    })
    .await?;
    Ok(Bytes::from(npy))
}

/// The image as an 8-bit grayscale PNG of its stored plane (which holds pixels alone).
pub async fn original_png(blobs: &BlobStore, image_key: &str) -> Result<Bytes, ArtefactError> {
    let bytes = blobs.get(image_key).await?;
    let png = blocking(move || {
        let image = plane::decode(&bytes).map_err(|e| {
            ArtefactError::Corrupt(format!("the stored image cannot be shown: {e}"))
        })?;
        let gray: Vec<u8> = image
            .pixels
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let buffer = image::GrayImage::from_raw(image.width, image.height, gray)
            .ok_or_else(|| ArtefactError::Corrupt("pixel count mismatch".into()))?;
        let mut out = Vec::new();
        buffer
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .map_err(|e| ArtefactError::Corrupt(format!("encoding the image: {e}")))?;
        Ok(out)
    })
    .await?;
    Ok(Bytes::from(png))
}

/// Whether a stored grid can be drawn over its geometry; a row that fails this is corrupt.
pub fn check(cam: &StoredCam, geometry: &Geometry) -> Result<(), ArtefactError> {
    let fits = geometry.width > 0
        && geometry.height > 0
        && (geometry.square == 0 || geometry.square >= geometry.width.max(geometry.height));
    if cam.grid.is_consistent() && fits {
        Ok(())
    } else {
        Err(ArtefactError::Corrupt(format!(
            "the stored map of label {} cannot be drawn ({}×{} grid of {} values over {geometry:?})",
            cam.label,
            cam.grid.h,
            cam.grid.w,
            cam.grid.values.len()
        )))
    }
}
