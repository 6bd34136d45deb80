//! Decoding radiographs into one grayscale plane of `f32` in [0, 1], whatever their bit depth
//! or colour type. The format is found from the bytes, never from a file name.

use image::{DynamicImage, ImageFormat};

/// Images smaller than this on either side cannot carry a diagnosis (or a CAM).
pub const MIN_SIDE: u32 = 32;
/// Larger than any detector: refuse before allocating gigabytes.
pub const MAX_SIDE: u32 = 16_384;

/// A decoded image: row-major intensities in [0, 1].
#[derive(Debug, Clone)]
pub struct GrayImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<f32>,
}

/// Why bytes are not a usable image. `code()` is the stable code users and the API see.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("not an image format xcam reads (PNG, JPEG, TIFF)")]
    UnsupportedFormat,
    #[error("the image data is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error(
        "the image is {width}×{height}; each side must be between {MIN_SIDE} and {MAX_SIDE} pixels"
    )]
    BadSize { width: u32, height: u32 },
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::UnsupportedFormat => "unsupported_format",
            DecodeError::Corrupt(_) => "corrupt_image",
            DecodeError::BadSize { .. } => "bad_image_size",
        }
    }
}

/// The format of some bytes, if they are an image xcam reads.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff)) => Some(f),
        _ => None,
    }
}

/// Decodes PNG, JPEG or TIFF of any bit depth; colour is reduced to luminance.
pub fn decode(bytes: &[u8]) -> Result<GrayImage, DecodeError> {
    let format = sniff(bytes).ok_or(DecodeError::UnsupportedFormat)?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // Guard memory before decoding: a 20-byte header can claim a 100k × 100k image.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => DecodeError::BadSize {
            width: 0,
            height: 0,
        },
        other => DecodeError::Corrupt(other.to_string()),
    })?;
    from_dynamic(&image)
}

/// Converts an already decoded image.
pub fn from_dynamic(image: &DynamicImage) -> Result<GrayImage, DecodeError> {
    let (width, height) = (image.width(), image.height());
    if width < MIN_SIDE || height < MIN_SIDE || width > MAX_SIDE || height > MAX_SIDE {
        return Err(DecodeError::BadSize { width, height });
    }
    let pixels = image.to_luma32f().into_raw();
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}
