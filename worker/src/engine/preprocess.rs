//! From decoded pixels to the model's input tensor, remembering (as a [`Geometry`]) how to map a
//! map at the model's resolution back onto the original image.

use tch::Tensor;
pub use xcam_shared::heatmap::Geometry;
use xcam_shared::{
    bundle::{InputSpec, Normalization},
    imaging::{
        GrayImage,
        fitted::{self, Fitted},
    },
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
    prepare_fitted(&fitted::fit(image, spec.into()), spec)
}

/// Normalises an image already fitted to the model's input size (at ingestion).
pub fn prepare_fitted(fitted: &Fitted, spec: &InputSpec) -> Prepared {
    let data = normalise(&fitted.image.pixels, &spec.normalize, spec.channels);
    let input = Tensor::from_slice(&data).view([
        i64::from(spec.channels),
        i64::from(fitted.image.height),
        i64::from(fitted.image.width),
    ]);
    Prepared {
        input,
        geometry: fitted.geometry,
    }
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
    use xcam_shared::{
        bundle::ResizePolicy,
        heatmap::{Grid, upsample},
    };

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
