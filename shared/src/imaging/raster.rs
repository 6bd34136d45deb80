//! PNG, JPEG and TIFF through the `image` crate.

use image::{DynamicImage, ImageFormat};

use super::{DecodeError, Format, GrayImage, ImageLimits, check_size};

pub(super) fn decode(
    bytes: &[u8],
    format: Format,
    limits: &ImageLimits,
) -> Result<GrayImage, DecodeError> {
    let format = match format {
        Format::Png => ImageFormat::Png,
        Format::Jpeg => ImageFormat::Jpeg,
        _ => ImageFormat::Tiff,
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // Check the claimed size before decoding: a 30-byte header can claim a 100k × 100k image.
    let (width, height) = reader.into_dimensions().map_err(|_| DecodeError::Corrupt)?;
    check_size(width, height, limits)?;
    reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    reader.limits(image_limits);
    let image = reader.decode().map_err(|_| DecodeError::Corrupt)?;
    Ok(to_gray(&image))
}

/// Luminance in [0, 1] for any colour type and bit depth.
pub fn to_gray(image: &DynamicImage) -> GrayImage {
    GrayImage {
        width: image.width(),
        height: image.height(),
        pixels: image.to_luma32f().into_raw(),
    }
}
