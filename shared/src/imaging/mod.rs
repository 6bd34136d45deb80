//! Decoding radiographs into one grayscale plane of `f32` in [0, 1], whatever their format, bit
//! depth or colour type, and validating them on the way. The format is found from the bytes,
//! never from a file name.
//!
//! - PNG, JPEG and TIFF ([`raster`]): 8- and 16-bit grayscale; RGB(A) is reduced to luminance.
//! - DICOM ([`dicom`]): CR and DX, with the modality rescale, the window (or VOI LUT) and
//!   MONOCHROME1 inversion applied, so lungs are dark and bone is bright.
//!
//! Every refusal is a [`DecodeError`] with a stable `code()`; things worth knowing that do not
//! stop an image are [`Warning`]s. Neither ever carries a value read from the file that could
//! identify a patient.

pub mod dicom;
mod dicom_lengths;
pub mod fitted;
pub mod plane;
pub mod raster;

use serde::{Deserialize, Serialize};

/// A decoded image: row-major intensities in [0, 1], 0 = black.
#[derive(Debug, Clone)]
pub struct GrayImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<f32>,
}

/// An intensity as a 16-bit level: `(v.clamp(0, 1) · 65 535).round()`, to the bit.
///
/// `f32::round` is a libm call on the baseline x86-64 target (no SSE4.1), a twentieth of an
/// ingestion's time. Adding and taking away 2²³ rounds a value below 2²³ to the nearest
/// integer, ties to even, in two exact-or-correctly-rounded additions; a tie rounded down is
/// then moved up, as `round` takes ties away from zero (`x − t` is exact here).
#[inline]
pub fn level16(v: f32) -> u16 {
    const SHIFT: f32 = 8_388_608.0; // 2^23
    let x = v.clamp(0.0, 1.0) * 65_535.0;
    let t = (x + SHIFT) - SHIFT;
    (if x - t == 0.5 { t + 1.0 } else { t }) as u16
}

/// What xcam reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Png,
    Jpeg,
    Tiff,
    Dicom,
}

/// Size limits an image must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub min_side: u32,
    pub max_side: u32,
    pub max_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            min_side: 32,
            max_side: 16_384,
            max_bytes: 256 << 20,
        }
    }
}

/// Why bytes are not a usable radiograph. `code()` is stable; messages never quote values read
/// from the file other than technical ones (sizes, transfer syntax, modality).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("not a format xcam reads (PNG, JPEG, TIFF or DICOM)")]
    UnsupportedFormat,
    #[error("the image data is corrupt or truncated")]
    Corrupt,
    #[error("the image is {width}×{height} pixels; each side must be at least {min}")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("the image is {width}×{height} pixels; each side must be at most {max}")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("the file is {bytes} bytes; at most {max} are accepted")]
    FileTooLarge { bytes: u64, max: u64 },
    #[error("the image has {samples} samples per pixel; one (grayscale) is needed")]
    NotSingleChannel { samples: u16 },
    #[error("the DICOM file lacks the required attribute {0}")]
    MissingAttribute(&'static str),
    #[error("modality {0} is not a radiograph (CR or DX)")]
    UnsupportedModality(String),
    #[error("the DX image is \"for processing\" (raw detector data), not for presentation")]
    ForProcessing,
    #[error("transfer syntax {0} is not supported")]
    UnsupportedTransferSyntax(String),
    #[error("photometric interpretation {0} cannot be used; MONOCHROME1 or MONOCHROME2 is needed")]
    UnsupportedPhotometric(String),
    #[error("the DICOM file has no file meta information (part 10 header)")]
    NoMeta,
    #[error(
        "the DICOM data is corrupt or truncated: element {tag} declares {declared} bytes; only {available} follow"
    )]
    DicomBadLength {
        tag: String,
        declared: u64,
        available: u64,
    },
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::UnsupportedFormat => "unsupported_format",
            DecodeError::Corrupt => "corrupt_image",
            DecodeError::TooSmall { .. } => "image_too_small",
            DecodeError::TooLarge { .. } => "image_too_large",
            DecodeError::FileTooLarge { .. } => "file_too_large",
            DecodeError::NotSingleChannel { .. } => "not_single_channel",
            DecodeError::MissingAttribute(_) => "dicom_missing_attribute",
            DecodeError::UnsupportedModality(_) => "dicom_unsupported_modality",
            DecodeError::ForProcessing => "dicom_for_processing",
            DecodeError::UnsupportedTransferSyntax(_) => "dicom_unsupported_transfer_syntax",
            DecodeError::UnsupportedPhotometric(_) => "dicom_unsupported_photometric",
            DecodeError::NoMeta => "dicom_no_meta",
            // A truncated file is the common case of it, and that has always been corrupt_image.
            DecodeError::DicomBadLength { .. } => "corrupt_image",
        }
    }
}

/// Something worth recording about an image that does not stop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Warning {
    pub code: String,
    pub message: String,
}

impl Warning {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// A decoded, validated image.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub format: Format,
    pub image: GrayImage,
    pub warnings: Vec<Warning>,
}

/// The format of some bytes, if xcam reads it.
pub fn sniff_format(bytes: &[u8]) -> Option<Format> {
    if dicom::is_dicom(bytes) {
        return Some(Format::Dicom);
    }
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => Some(Format::Png),
        Ok(image::ImageFormat::Jpeg) => Some(Format::Jpeg),
        Ok(image::ImageFormat::Tiff) => Some(Format::Tiff),
        _ => None,
    }
}

/// How many leading bytes [`sniff_format`] needs (DICOM's magic sits after a 128-byte preamble).
pub const SNIFF_BYTES: usize = 132;

/// Decodes and validates any supported format.
pub fn decode_with(bytes: &[u8], limits: &ImageLimits) -> Result<Decoded, DecodeError> {
    // A decoder bug must not take the process down with it: a panic is a corrupt file.
    std::panic::catch_unwind(|| decode_unguarded(bytes, limits))
        .unwrap_or(Err(DecodeError::Corrupt))
}

/// [`decode_with`] without its panic guard, for the fuzz tests, which must see panics.
pub fn decode_unguarded(bytes: &[u8], limits: &ImageLimits) -> Result<Decoded, DecodeError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(DecodeError::FileTooLarge {
            bytes: bytes.len() as u64,
            max: limits.max_bytes,
        });
    }
    let format = sniff_format(bytes).ok_or(DecodeError::UnsupportedFormat)?;
    let (image, warnings) = match format {
        Format::Dicom => dicom::decode(bytes, limits)?,
        raster_format => (raster::decode(bytes, raster_format, limits)?, Vec::new()),
    };
    check_size(image.width, image.height, limits)?;
    Ok(Decoded {
        format,
        image,
        warnings,
    })
}

/// Decodes with the default limits.
pub fn decode(bytes: &[u8]) -> Result<GrayImage, DecodeError> {
    decode_with(bytes, &ImageLimits::default()).map(|d| d.image)
}

fn check_size(width: u32, height: u32, limits: &ImageLimits) -> Result<(), DecodeError> {
    if width < limits.min_side || height < limits.min_side {
        return Err(DecodeError::TooSmall {
            width,
            height,
            min: limits.min_side,
        });
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max: limits.max_side,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::level16;

    fn by_round(v: f32) -> u16 {
        (v.clamp(0.0, 1.0) * 65_535.0).round() as u16
    }

    #[test]
    fn a_level_is_the_rounded_intensity_to_the_bit() {
        // Every 61st float of [0, 1], the ends, values beyond them, and NaN. (Every one of the
        // 2³² floats agrees: checked once, in a release build, in 14 s.)
        let one = 1.0f32.to_bits();
        let sample = (0..=one)
            .step_by(61)
            .chain([one - 1, one])
            .map(f32::from_bits);
        for v in sample.chain([-0.0, -1.0, 1.5, f32::INFINITY, f32::NAN]) {
            assert_eq!(level16(v), by_round(v), "{v:e}");
        }
    }
}
