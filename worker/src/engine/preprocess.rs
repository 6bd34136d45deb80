//! From decoded pixels to what the engine takes: an image's 16-bit levels at the model's input
//! size, with the [`Geometry`] that maps a map at the model's resolution back onto the original.
//!
//! Levels, not normalised floats: the replica converts and normalises a whole batch at once on
//! its device ([`super::model::LoadedModel::inputs`]), so a GPU is sent half the bytes of fp32
//! and the host does no per-pixel arithmetic for an image fitted at ingestion.

use tch::{Device, Kind, Tensor};
pub use xcam_shared::heatmap::Geometry;
use xcam_shared::{
    bundle::{InputSpec, Normalization},
    imaging::{
        GrayImage,
        fitted::{self, Stored},
    },
};

// Fitted planes store little-endian levels, which go to libtorch as they are.
#[cfg(not(target_endian = "little"))]
compile_error!("xcam hands stored little-endian levels to libtorch unconverted");

/// One image ready for the engine: its levels as a 1×H×W tensor on the CPU. The kind is
/// `Int16` holding `u16` bits (tch has no unsigned 16-bit kind); the engine reads them back
/// modulo 2¹⁶.
#[derive(Debug)]
pub struct Prepared {
    pub input: Tensor,
    pub geometry: Geometry,
}

/// Resizes (bilinear, antialiased when shrinking) and pads for letterbox: the same fitting,
/// to the same 16-bit levels, as ingestion stores, so one image gets one map either way.
///
/// Plain Rust on purpose: this runs on the callers' threads, beside the inference thread, and a
/// libtorch op here would start a second OpenMP team competing with the model's for the cores.
pub fn prepare(image: &GrayImage, spec: &InputSpec) -> Prepared {
    let fitted = fitted::fit(image, spec.into());
    let levels: Vec<u8> = fitted::levels(&fitted)
        .into_iter()
        .flat_map(u16::to_le_bytes)
        .collect();
    let (width, height) = (fitted.image.width, fitted.image.height);
    Prepared {
        input: levels_tensor(&levels, width, height),
        geometry: fitted.geometry,
    }
}

/// An image fitted at ingestion, as stored: one copy of its levels, nothing converted.
pub fn prepare_stored(stored: &Stored<'_>) -> Prepared {
    Prepared {
        input: levels_tensor(stored.levels, stored.width, stored.height),
        geometry: stored.geometry,
    }
}

fn levels_tensor(levels: &[u8], width: u32, height: u32) -> Tensor {
    Tensor::from_data_size(
        levels,
        &[1, i64::from(height), i64::from(width)],
        Kind::Int16,
    )
}

/// Turns a batch of levels (N×1×H×W) into the model's input (N×C×H×W fp32, normalised) on one
/// device: one conversion and one fused multiply-add that also spreads the grey plane over the
/// model's channels.
#[derive(Debug)]
pub struct Normaliser {
    device: Device,
    /// 1×C×1×1: per channel, what a level is multiplied by and what is added then.
    scale: Tensor,
    offset: Tensor,
    channels_last: bool,
}

impl Normaliser {
    pub fn new(spec: &InputSpec, device: Device, channels_last: bool) -> Self {
        let (scale, offset): (Vec<f32>, Vec<f32>) = (0..spec.channels as usize)
            .map(|c| {
                let (scale, offset) = match &spec.normalize {
                    Normalization::Range { low, high } => (high - low, *low),
                    Normalization::MeanStd { mean, std } => (1.0 / std[c], -mean[c] / std[c]),
                };
                (scale / 65_535.0, offset)
            })
            .unzip();
        let per_channel =
            |v: Vec<f32>| Tensor::from_slice(&v).view([1, -1, 1, 1]).to_device(device);
        Self {
            device,
            scale: per_channel(scale),
            offset: per_channel(offset),
            channels_last,
        }
    }

    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    pub fn apply(&self, levels: &Tensor) -> Tensor {
        let levels = if self.device.is_cuda() {
            // From pinned host memory the copy is a DMA the host need not wait for; the
            // arithmetic after it is queued on the same stream, so it sees the data.
            levels
                .pin_memory(self.device)
                .to_device_(self.device, Kind::Int16, true, false)
        } else {
            levels.shallow_clone()
        };
        // The stored bits are u16, which i16 reads as negative from 32 768 on; masking them
        // in i32 is a third of the cost of a floating-point remainder.
        let levels = levels.to_kind(Kind::Int).bitwise_and(0xFFFF);
        let x = levels * &self.scale + &self.offset;
        if self.channels_last {
            // NHWC strides under NCHW sizes: convolutions follow their input's layout.
            x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
        } else {
            x
        }
    }
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

    /// Levels as floats in [0, 1], the way [`Normaliser`] reads them.
    fn unit(levels: &Tensor) -> Vec<f32> {
        let normaliser = Normaliser::new(&spec(ResizePolicy::Stretch), Device::Cpu, false);
        Vec::<f32>::try_from(normaliser.apply(&levels.unsqueeze(0)).flatten(0, -1)).unwrap()
    }

    /// Maps the model input back (as a CAM would be) and finds the bright block again.
    fn round_trip(resize: ResizePolicy) -> Vec<f32> {
        let prepared = prepare(&image(), &spec(resize));
        assert_eq!(prepared.input.size(), [1, 64, 64]);
        let input = unit(&prepared.input);
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
        let corner = unit(&prepared.input)[0];
        assert!(
            (corner - 0.1).abs() < 1e-4,
            "padding is the minimum: {corner}"
        );
    }

    #[test]
    fn normalising_on_the_device_is_the_host_formula_over_every_channel() {
        let levels: Vec<u16> = vec![0, 1, 32_767, 32_768, 50_000, 65_535];
        let bytes: Vec<u8> = levels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let batch = levels_tensor(&bytes, 3, 2).unsqueeze(0);
        let spec = InputSpec {
            channels: 3,
            normalize: Normalization::MeanStd {
                mean: vec![0.485, 0.456, 0.406],
                std: vec![0.229, 0.224, 0.225],
            },
            ..spec(ResizePolicy::Stretch)
        };
        for channels_last in [false, true] {
            let x = Normaliser::new(&spec, Device::Cpu, channels_last).apply(&batch);
            assert_eq!(x.size(), [1, 3, 2, 3]);
            for c in 0..3 {
                for (i, &level) in levels.iter().enumerate() {
                    let Normalization::MeanStd { mean, std } = &spec.normalize else {
                        unreachable!()
                    };
                    let want = (f32::from(level) / 65_535.0 - mean[c]) / std[c];
                    let got = x.double_value(&[0, c as i64, i as i64 / 3, i as i64 % 3]) as f32;
                    assert!((got - want).abs() < 1e-5, "channel {c}, level {level}");
                }
            }
        }
    }
}
