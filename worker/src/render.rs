//! What a CAM looks like on disk: a colour overlay PNG (jet colormap blended over the image,
//! as pytorch-grad-cam's `show_cam_on_image` does) and the raw map as a NumPy `.npy`.
//!
//! Overlays are built from pixels only: nothing of the input file's metadata is carried over.

use std::{io::Cursor, sync::LazyLock};

use image::{
    ImageEncoder, RgbImage,
    codecs::png::{CompressionType, FilterType, PngEncoder},
};
use xcam_shared::imaging::GrayImage;

/// Weight of the image in the blend (pytorch-grad-cam's default `image_weight`).
pub const IMAGE_WEIGHT: f32 = 0.5;

/// The jet colormap (as OpenCV's COLORMAP_JET), for v in [0, 1].
pub fn jet(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    let channel = |offset: f32| (1.5 - (4.0 * v - offset).abs()).clamp(0.0, 1.0);
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// The map's share of each blended pixel, per 8-bit map level: pytorch-grad-cam quantises the
/// map to `uint8` before colouring it, so 256 entries are exact, not an approximation.
static JET_WEIGHTED: LazyLock<[[f32; 3]; 256]> = LazyLock::new(|| {
    std::array::from_fn(|level| jet(level as f32 / 255.0).map(|c| (1.0 - IMAGE_WEIGHT) * c))
});

/// Blends the map's colours over the (grayscale) image and encodes a PNG, as pytorch-grad-cam's
/// `show_cam_on_image` does: `uint8(255 · blend / max(blend))`.
pub fn overlay_png(image: &GrayImage, map: &[f32]) -> Result<Vec<u8>, image::ImageError> {
    let lut = &*JET_WEIGHTED;
    // `as u8` saturates (and sends NaN to 0), like numpy's clip-then-cast of the map.
    let level = |m: f32| usize::from((255.0 * m) as u8);
    let peak = image
        .pixels
        .iter()
        .zip(map)
        .map(|(&g, &m)| {
            let [r, gr, b] = lut[level(m)];
            r.max(gr).max(b) + IMAGE_WEIGHT * g
        })
        .fold(0f32, f32::max);
    // Divided, not multiplied by a reciprocal: the brightest channel must come out at 255.
    let peak = if peak > 0.0 { peak } else { f32::INFINITY };
    let mut rgb = RgbImage::new(image.width, image.height);
    for ((out, &g), &m) in rgb.chunks_exact_mut(3).zip(&image.pixels).zip(map) {
        let gray = IMAGE_WEIGHT * g;
        for (o, c) in out.iter_mut().zip(lut[level(m)]) {
            *o = ((c + gray) / peak * 255.0) as u8;
        }
    }
    encode_png(&rgb)
}

fn encode_png(rgb: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    // Fast compression: an overlay is encoded per image on the worker, beside inference, and
    // the default level costs more CPU than the model's own head on a large radiograph.
    PngEncoder::new_with_quality(
        Cursor::new(&mut out),
        CompressionType::Fast,
        FilterType::Adaptive,
    )
    .write_image(
        rgb.as_raw(),
        rgb.width(),
        rgb.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// A little-endian float32 `.npy` (format 1.0) of shape (height, width).
pub fn npy_f32(map: &[f32], width: u32, height: u32) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({height}, {width}), }}");
    // The magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + map.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in map {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_describes_the_shape() {
        let bytes = npy_f32(&[0.0, 0.5, 1.0, 0.25, 0.75, 1.0], 3, 2);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        assert_eq!(bytes.len(), 10 + header_len + 6 * 4);
        assert_eq!(
            f32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()),
            1.0
        );
    }

    #[test]
    fn overlay_is_show_cam_on_image() {
        let image = GrayImage {
            width: 2,
            height: 1,
            pixels: vec![0.2, 0.9],
        };
        // Blends: [0.1, 0.1, 0.35] and [0.7, 0.45, 0.45]; the brightest channel becomes 255
        // and the rest scale with it, truncated as numpy's uint8 cast does.
        let png = overlay_png(&image, &[0.0, 1.0]).unwrap();
        let rgb = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(rgb.as_raw(), &[36, 36, 127, 255, 163, 163]);
    }

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(jet(1.0), [0.5, 0.0, 0.0]);
        assert_eq!(jet(0.5), [0.5, 1.0, 0.5]);
    }
}
