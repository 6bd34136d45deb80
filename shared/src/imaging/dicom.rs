//! DICOM radiographs (CR and DX) through dicom-rs.
//!
//! Only technical attributes are read (modality, SOP class, transfer syntax, pixel module,
//! window and rescale, view and body part). Nothing else is looked at, kept or quoted: no
//! patient, study, institution, date or UID value leaves this module.

use std::io::Cursor;

use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    ConvertOptions, ModalityLutOption, PhotometricInterpretation, PixelDecoder, VoiLutOption,
};

use super::{DecodeError, GrayImage, ImageLimits, Warning, check_size};

/// `DICM` at offset 128 (a part 10 file) or at 0 (the preamble left out).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM") || bytes.get(0..4) == Some(b"DICM")
}

/// Whether an entry is a DICOM data set stored without its part-10 header (no preamble and
/// `DICM`): named like one, or starting with an element of the file meta (group 0002) or
/// identifying (group 0008) groups in little-endian order. Such files are refused with
/// `dicom_no_meta` rather than skipped as non-images.
pub fn is_headless_dicom(name: &str, head: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    let named = lower.ends_with(".dcm") || lower.ends_with(".dicom");
    let tagged = matches!(head, [0x02 | 0x08, 0x00, _, 0x00, _, _, _, _, ..]);
    !is_dicom(head) && (named || tagged)
}

/// SOP classes that hold radiographs.
const CR: &str = uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE;
const DX_PRESENTATION: &str = uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION;
const DX_PROCESSING: &str = uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING;
const SECONDARY_CAPTURE: &str = uids::SECONDARY_CAPTURE_IMAGE_STORAGE;

/// Transfer syntaxes whose pixel data this build decodes. Not here: JPEG Extended 12-bit
/// (dicom-rs cannot decode it) and JPEG-LS (its codec needs cmake at build time).
const SUPPORTED_TS: [&str; 10] = [
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    // Explicit VR Big Endian: retired from the standard, still found in archives.
    "1.2.840.10008.1.2.2",
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::RLE_LOSSLESS,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
];

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok().flatten()?.to_str().ok()?;
    let value = value
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_owned();
    (!value.is_empty()).then_some(value)
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element_opt(tag).ok().flatten()?.to_int::<u32>().ok()
}

/// A value fit to quote in a message: short, printable, and from a small technical vocabulary.
fn technical(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(24)
        .collect();
    if cleaned.is_empty() {
        "(unreadable)".into()
    } else {
        cleaned
    }
}

pub(super) fn decode(
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<(GrayImage, Vec<Warning>), DecodeError> {
    super::dicom_lengths::check(bytes, limits.max_bytes)?;
    let obj = OpenFileOptions::new()
        .from_reader(Cursor::new(bytes))
        .map_err(|e| {
            if e.to_string().contains("meta group") {
                DecodeError::NoMeta
            } else {
                DecodeError::Corrupt
            }
        })?;
    let mut warnings = Vec::new();

    let sop_class = text(&obj, tags::SOP_CLASS_UID)
        .ok_or(DecodeError::MissingAttribute("SOP Class UID (0008,0016)"))?;
    let modality =
        text(&obj, tags::MODALITY).ok_or(DecodeError::MissingAttribute("Modality (0008,0060)"))?;
    if modality != "CR" && modality != "DX" {
        return Err(DecodeError::UnsupportedModality(technical(&modality)));
    }
    let presentation_intent = text(&obj, tags::PRESENTATION_INTENT_TYPE);
    if sop_class == DX_PROCESSING || presentation_intent.as_deref() == Some("FOR PROCESSING") {
        return Err(DecodeError::ForProcessing);
    }
    if sop_class == SECONDARY_CAPTURE {
        warnings.push(Warning::new(
            "secondary_capture",
            "a secondary capture (scanned or screenshot image), not an original radiograph",
        ));
    } else if sop_class != CR && sop_class != DX_PRESENTATION {
        warnings.push(Warning::new(
            "unexpected_sop_class",
            format!("SOP class {} is not CR or DX", technical(&sop_class)),
        ));
    }

    let rows = int(&obj, tags::ROWS).ok_or(DecodeError::MissingAttribute("Rows (0028,0010)"))?;
    let columns =
        int(&obj, tags::COLUMNS).ok_or(DecodeError::MissingAttribute("Columns (0028,0011)"))?;
    int(&obj, tags::BITS_ALLOCATED)
        .ok_or(DecodeError::MissingAttribute("Bits Allocated (0028,0100)"))?;
    let photometric = text(&obj, tags::PHOTOMETRIC_INTERPRETATION).ok_or(
        DecodeError::MissingAttribute("Photometric Interpretation (0028,0004)"),
    )?;
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(DecodeError::MissingAttribute("Pixel Data (7FE0,0010)"));
    }
    let samples = int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if photometric != "MONOCHROME1" && photometric != "MONOCHROME2" {
        return Err(DecodeError::UnsupportedPhotometric(technical(&photometric)));
    }
    if samples != 1 {
        return Err(DecodeError::NotSingleChannel {
            samples: samples as u16,
        });
    }
    check_size(columns, rows, limits)?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    if !SUPPORTED_TS.contains(&ts.as_str()) {
        return Err(DecodeError::UnsupportedTransferSyntax(technical(&ts)));
    }

    match text(&obj, tags::BODY_PART_EXAMINED).map(|b| b.to_ascii_uppercase()) {
        Some(b) if b == "CHEST" || b == "THORAX" => {}
        Some(b) => warnings.push(Warning::new(
            "body_part_not_chest",
            format!("body part examined is {}, not CHEST", technical(&b)),
        )),
        None => warnings.push(Warning::new(
            "body_part_missing",
            "body part examined is not recorded",
        )),
    }
    match text(&obj, tags::VIEW_POSITION).map(|v| v.to_ascii_uppercase()) {
        Some(v) if v == "PA" || v == "AP" => {}
        Some(v) => warnings.push(Warning::new(
            "view_not_frontal",
            format!("view position is {}, not PA or AP", technical(&v)),
        )),
        None => warnings.push(Warning::new(
            "view_missing",
            "view position is not recorded",
        )),
    }
    if text(&obj, tags::BURNED_IN_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("YES")) {
        warnings.push(Warning::new(
            "burned_in_annotation",
            "the pixels may carry burned-in text",
        ));
    }
    if obj
        .element_opt(tags::MODALITY_LUT_SEQUENCE)
        .ok()
        .flatten()
        .is_some()
    {
        warnings.push(Warning::new(
            "modality_lut_ignored",
            "a modality LUT sequence is present; only rescale slope and intercept are applied",
        ));
    }
    let frames = text(&obj, tags::NUMBER_OF_FRAMES)
        .and_then(|f| f.parse::<u32>().ok())
        .unwrap_or(1);
    if frames > 1 {
        warnings.push(Warning::new(
            "multi_frame",
            format!("{frames} frames; the first is used"),
        ));
    }

    let pixels = obj
        .decode_pixel_data_frame(0)
        .map_err(|_| DecodeError::Corrupt)?;
    let (width, height) = (pixels.columns(), pixels.rows());
    check_size(width, height, limits)?;
    let windowed = pixels.window().ok().flatten().is_some()
        || pixels.voi_lut_sequence().ok().flatten().is_some();
    let options = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Default)
        .with_voi_lut(if windowed {
            VoiLutOption::First
        } else {
            VoiLutOption::Identity
        });
    let mut values: Vec<f32> = pixels
        .to_vec_frame_with_options(0, &options)
        .map_err(|_| DecodeError::Corrupt)?;
    if values.len() != (width as usize) * (height as usize) {
        return Err(DecodeError::Corrupt);
    }
    if windowed {
        // The VOI output spans 0 ..= 2^n - 1, n the power of two at or above Bits Stored.
        let bits = u32::from(pixels.bits_stored().max(1))
            .next_power_of_two()
            .min(32);
        let top = ((1u64 << bits) - 1) as f32;
        values
            .iter_mut()
            .for_each(|v| *v = (*v / top).clamp(0.0, 1.0));
    } else {
        let (lo, hi) = values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
        values.iter_mut().for_each(|v| *v = (*v - lo) * scale);
    }
    if *pixels.photometric_interpretation() == PhotometricInterpretation::Monochrome1 {
        // MONOCHROME1 shows low values bright: invert so that, as everywhere in xcam, bone is bright.
        values.iter_mut().for_each(|v| *v = 1.0 - *v);
    }
    Ok((
        GrayImage {
            width,
            height,
            pixels: values,
        },
        warnings,
    ))
}
