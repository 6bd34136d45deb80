//! From decoded pixels to the model's input tensor, remembering (as a [`Geometry`]) how to map a
//! map at the model's resolution back onto the original image.

use std::borrow::Cow;

use fast_image_resize::{
    FilterType, ResizeAlg, ResizeOptions, Resizer,
    images::{TypedImage, TypedImageRef},
    pixels::F32,
};
use tch::Tensor;
pub use xcam_shared::heatmap::Geometry;
use xcam_shared::{
    bundle::{InputSpec, Normalization, ResizePolicy},
    imaging::GrayImage,
};

/// One image ready for the model: a C×H×W float tensor on the CPU.
#[derive(Debug)]
pub struct Prepared {
    pub input: Tensor,
    pub geometry: Geometry,
}

/// Resizes (bilinear, antialiased when shrinking), pads for letterbox, normalises.
///
/// Plain Rust on purpose: this runs on the callers' threads, beside the inference thread, and a
/// libtorch op here would start a second OpenMP team competing with the model's for the cores.
pub fn prepare(image: &GrayImage, spec: &InputSpec) -> Prepared {
    let mut geometry = Geometry {
        width: image.width,
        height: image.height,
        square: 0,
    };
    let mut plane = Cow::Borrowed(image.pixels.as_slice());
    let (mut width, mut height) = (image.width, image.height);
    if spec.resize == ResizePolicy::Letterbox && width != height {
        let side = width.max(height);
        // Pad with the image's own minimum: with zeros, a bright-background image would get
        // dark bars the model has never seen.
        let fill = image.pixels.iter().copied().fold(f32::INFINITY, f32::min);
        let mut square = vec![fill; side as usize * side as usize];
        let (left, top) = ((side - width) / 2, (side - height) / 2);
        for (y, row) in image.pixels.chunks_exact(width as usize).enumerate() {
            let at = (top as usize + y) * side as usize + left as usize;
            square[at..at + row.len()].copy_from_slice(row);
        }
        plane = Cow::Owned(square);
        (width, height, geometry.square) = (side, side, side);
    }
    if (width, height) != (spec.width, spec.height) {
        plane = Cow::Owned(resize(&plane, (width, height), (spec.width, spec.height)));
    }
    let data = normalise(&plane, &spec.normalize, spec.channels);
    let input = Tensor::from_slice(&data).view([
        i64::from(spec.channels),
        i64::from(spec.height),
        i64::from(spec.width),
    ]);
    Prepared { input, geometry }
}

/// Bilinear convolution whose support widens with the scale when shrinking (Pillow's and
/// torchvision's antialiased resize), SIMD-accelerated.
fn resize(plane: &[f32], from: (u32, u32), to: (u32, u32)) -> Vec<f32> {
    let src = TypedImageRef::<F32>::new(from.0, from.1, bytemuck::cast_slice(plane))
        .expect("the plane holds width × height pixels");
    let mut dst = TypedImage::<F32>::new(to.0, to.1);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize_typed(&src, &mut dst, &options)
        .expect("single-channel f32 images of non-zero size always resize");
    bytemuck::cast_slice(dst.pixels()).to_vec()
}

fn normalise(plane: &[f32], norm: &Normalization, channels: u32) -> Vec<f32> {
    let mut out = Vec::with_capacity(plane.len() * channels as usize);
    for c in 0..channels as usize {
        let (scale, offset) = match norm {
            Normalization::Range { low, high } => (high - low, *low),
            Normalization::MeanStd { mean, std } => (1.0 / std[c], -mean[c] / std[c]),
        };
        out.extend(plane.iter().map(|v| v * scale + offset));
    }
    out
}

#[cfg(test)]
mod tests {
    use xcam_shared::heatmap::{Grid, upsample};

    use super::*;

    fn spec(resize: ResizePolicy) -> InputSpec {
        InputSpec {
            height: 64,
            width: 64,
            channels: 1,
            resize,
            normalize: Normalization::Range {
                low: 0.0,
                high: 1.0,
            },
        }
    }

    /// A 200×100 image with a bright block at x 140..180, y 20..60.
    fn image() -> GrayImage {
        let (w, h) = (200u32, 100u32);
        let pixels = (0..w * h)
            .map(|i| {
                if (140..180).contains(&(i % w)) && (20..60).contains(&(i / w)) {
                    1.0
                } else {
                    0.1
                }
            })
            .collect();
        GrayImage {
            width: w,
            height: h,
            pixels,
        }
    }

    /// Maps the model input back (as a CAM would be) and finds the bright block again.
    fn round_trip(resize: ResizePolicy) -> Vec<f32> {
        let prepared = prepare(&image(), &spec(resize));
        assert_eq!(prepared.input.size(), [1, 64, 64]);
        let input = Vec::<f32>::try_from(prepared.input.flatten(0, -1)).unwrap();
        let grid = Grid {
            h: 64,
            w: 64,
            values: input,
        };
        let back = upsample(&grid, &prepared.geometry);
        assert_eq!(back.len(), 100 * 200);
        back
    }

    #[test]
    fn upsampling_matches_libtorch_bilinear_without_corner_alignment() {
        let map: Vec<f32> = (0..12).map(|i| (i * i % 7) as f32).collect();
        let geometry = Geometry {
            width: 13,
            height: 7,
            square: 0,
        };
        let grid = Grid {
            h: 3,
            w: 4,
            values: map.clone(),
        };
        let ours = upsample(&grid, &geometry);
        let reference = Tensor::from_slice(&map)
            .view([1, 1, 3, 4])
            .upsample_bilinear2d([7, 13], false, None, None);
        let reference = Vec::<f32>::try_from(reference.flatten(0, -1)).unwrap();
        for (a, b) in ours.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn letterbox_and_stretch_map_back_onto_the_original_pixels() {
        for resize in [ResizePolicy::Letterbox, ResizePolicy::Stretch] {
            let back = round_trip(resize);
            let at = |x: usize, y: usize| back[y * 200 + x];
            assert!(
                at(160, 40) > 0.8,
                "{resize:?}: the block's centre stays bright ({})",
                at(160, 40)
            );
            assert!(
                at(60, 40) < 0.2 && at(160, 90) < 0.2,
                "{resize:?}: elsewhere stays dark"
            );
        }
        // Letterbox pads the short side with the image's minimum, not with black.
        let prepared = prepare(&image(), &spec(ResizePolicy::Letterbox));
        assert_eq!(
            prepared.geometry,
            Geometry {
                width: 200,
                height: 100,
                square: 200
            }
        );
        let corner = prepared.input.double_value(&[0, 0, 0]);
        assert!(
            (corner - 0.1).abs() < 1e-4,
            "padding is the minimum: {corner}"
        );
    }
}
