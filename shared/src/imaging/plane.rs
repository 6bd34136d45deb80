//! The validated pixel plane: what xcam keeps of an upload once it passed validation.
//!
//! A 16-bit grayscale PNG of the decoded intensities (rescale, window and MONOCHROME1 already
//! applied), and nothing else: no DICOM attribute, no EXIF, no text chunk, so nothing that could
//! identify a patient survives ingestion. Workers and the producer's image routes read planes
//! only; the uploaded bytes are decoded once, at upload.
//!
//! 16 bits keep 8- and 16-bit sources exactly (k/255 maps to k·257) and quantise windowed DICOM
//! values to 1/65 535, far below what the model's 8-bit-trained input can tell apart.

use image::{
    ImageFormat,
    codecs::png::{CompressionType, FilterType, PngEncoder},
};

use super::{DecodeError, GrayImage, ImageLimits, check_size};

/// The blob-store extension of a plane.
pub const EXTENSION: &str = "png";

/// Encodes a decoded image as a plane.
pub fn encode(image: &GrayImage) -> Result<Vec<u8>, image::ImageError> {
    let samples: Vec<u16> = image.pixels.iter().map(|&v| super::level16(v)).collect();
    let plane =
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(image.width, image.height, samples)
            .ok_or_else(|| {
                image::ImageError::Parameter(image::error::ParameterError::from_kind(
                    image::error::ParameterErrorKind::DimensionMismatch,
                ))
            })?;
    let mut out = Vec::new();
    // Fast compression: planes are written once per upload and read once per job; the
    // adaptive filter still takes radiographs to about half their raw size.
    plane.write_with_encoder(PngEncoder::new_with_quality(
        &mut out,
        CompressionType::Fast,
        FilterType::Adaptive,
    ))?;
    Ok(out)
}

/// The sides a plane may have: its image passed the configured limits at upload, which may be
/// changed since; these only stop a forged blob from claiming absurd dimensions.
const LIMITS: ImageLimits = ImageLimits {
    min_side: 1,
    max_side: 1 << 16,
    max_bytes: u64::MAX,
};

/// Reads a plane back. Anything but a 16-bit grayscale PNG is `Corrupt`: a plane is only ever
/// written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<GrayImage, DecodeError> {
    let reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), ImageFormat::Png);
    let (width, height) = reader.into_dimensions().map_err(|_| DecodeError::Corrupt)?;
    check_size(width, height, &LIMITS)?;
    let image = image::load_from_memory_with_format(bytes, ImageFormat::Png)
        .map_err(|_| DecodeError::Corrupt)?;
    let image::DynamicImage::ImageLuma16(plane) = image else {
        return Err(DecodeError::Corrupt);
    };
    Ok(GrayImage {
        width,
        height,
        pixels: plane
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 65_535.0)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(width: u32, height: u32) -> GrayImage {
        let n = (width * height) as usize;
        GrayImage {
            width,
            height,
            pixels: (0..n).map(|i| i as f32 / (n - 1) as f32).collect(),
        }
    }

    #[test]
    fn a_plane_round_trips_within_one_sixteen_bit_step() {
        let image = ramp(64, 48);
        let back = decode(&encode(&image).unwrap()).unwrap();
        assert_eq!((back.width, back.height), (64, 48));
        let worst = image
            .pixels
            .iter()
            .zip(&back.pixels)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 0.5 / 65_535.0 + f32::EPSILON,
            "worst error {worst}"
        );
    }

    #[test]
    fn eight_bit_sources_are_kept_exactly() {
        let image = GrayImage {
            width: 32,
            height: 32,
            pixels: (0..1024).map(|i| (i % 256) as f32 / 255.0).collect(),
        };
        let back = decode(&encode(&image).unwrap()).unwrap();
        let as_u8: Vec<u8> = back
            .pixels
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        let expected: Vec<u8> = (0..1024).map(|i| (i % 256) as u8).collect();
        assert_eq!(as_u8, expected);
    }

    #[test]
    fn anything_but_a_sixteen_bit_gray_png_is_refused() {
        let eight_bit = image::GrayImage::new(40, 40);
        let mut png = Vec::new();
        eight_bit
            .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&png).unwrap_err(), DecodeError::Corrupt);
        assert_eq!(decode(b"DICM not a png").unwrap_err(), DecodeError::Corrupt);
    }

    #[test]
    fn a_plane_carries_no_text_chunks() {
        let png = encode(&ramp(40, 40)).unwrap();
        for chunk in [b"tEXt", b"zTXt", b"iTXt", b"eXIf"] {
            assert!(!png.windows(4).any(|w| w == chunk), "{chunk:?} found");
        }
    }
}
