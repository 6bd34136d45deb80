//! From decoded pixels to the model's input tensor, remembering how to map a map at the model's
//! resolution back onto the original image.

use tch::{Kind, Tensor};
use xcam_shared::{
    bundle::{InputSpec, Normalization, ResizePolicy},
    imaging::GrayImage,
};

/// How the original image sits in the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    /// Side of the padded square (letterbox), or 0 for stretch.
    pub square: u32,
}

impl Geometry {
    /// Where the image sits inside the padded square (letterbox only).
    pub fn offset(&self) -> (u32, u32) {
        if self.square == 0 {
            (0, 0)
        } else {
            (
                (self.square - self.width) / 2,
                (self.square - self.height) / 2,
            )
        }
    }
}

/// One image ready for the model: a C×H×W float tensor on the CPU.
#[derive(Debug)]
pub struct Prepared {
    pub input: Tensor,
    pub geometry: Geometry,
}

/// Resizes with antialiasing (as PIL and torchvision do), pads for letterbox, normalises.
pub fn prepare(image: &GrayImage, spec: &InputSpec) -> Prepared {
    let (w, h) = (image.width as i64, image.height as i64);
    let mut x = Tensor::from_slice(&image.pixels).view([1, 1, h, w]);
    let mut geometry = Geometry {
        width: image.width,
        height: image.height,
        square: 0,
    };
    if spec.resize == ResizePolicy::Letterbox && w != h {
        let side = w.max(h);
        let (left, top) = ((side - w) / 2, (side - h) / 2);
        // Pad with the image's own minimum: with zeros, a bright-background image would get
        // dark bars the model has never seen.
        let fill = image.pixels.iter().copied().fold(f32::INFINITY, f32::min);
        x = x.constant_pad_nd([left, side - w - left, top, side - h - top]) + 0.0;
        x = x.where_scalarother(&pad_mask(h, w, side, left, top), f64::from(fill));
        geometry.square = side as u32;
    }
    let (th, tw) = (i64::from(spec.height), i64::from(spec.width));
    if x.size()[2..] != [th, tw] {
        x = x.internal_upsample_bilinear2d_aa([th, tw], false, None, None);
    }
    let x = normalise(x, &spec.normalize, spec.channels);
    Prepared {
        input: x.squeeze_dim(0),
        geometry,
    }
}

fn pad_mask(h: i64, w: i64, side: i64, left: i64, top: i64) -> Tensor {
    let ones = Tensor::ones([1, 1, h, w], (Kind::Bool, tch::Device::Cpu));
    ones.constant_pad_nd([left, side - w - left, top, side - h - top])
}

fn normalise(x: Tensor, norm: &Normalization, channels: u32) -> Tensor {
    let x = if channels == 3 {
        x.repeat([1, 3, 1, 1])
    } else {
        x
    };
    match norm {
        Normalization::Range { low, high } => x * f64::from(high - low) + f64::from(*low),
        Normalization::MeanStd { mean, std } => {
            let c = mean.len() as i64;
            let mean = Tensor::from_slice(mean).view([1, c, 1, 1]);
            let std = Tensor::from_slice(std).view([1, c, 1, 1]);
            (x - mean) / std
        }
    }
}

/// Maps a low-resolution map (h×w) onto the original image's pixels (H×W), bilinearly with
/// half-pixel centres (align_corners = false, as cv2.resize and pytorch-grad-cam do).
pub fn to_original(map: &Tensor, geometry: &Geometry) -> Tensor {
    let map = map.view([1, 1, map.size()[0], map.size()[1]]);
    let (w, h) = (i64::from(geometry.width), i64::from(geometry.height));
    if geometry.square == 0 {
        return map
            .upsample_bilinear2d([h, w], false, None, None)
            .view([h, w]);
    }
    let side = i64::from(geometry.square);
    let (left, top) = geometry.offset();
    map.upsample_bilinear2d([side, side], false, None, None)
        .view([side, side])
        .narrow(0, i64::from(top), h)
        .narrow(1, i64::from(left), w)
        .contiguous()
}

#[cfg(test)]
mod tests {
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
        let back = to_original(&prepared.input.squeeze_dim(0), &prepared.geometry);
        assert_eq!(back.size(), [100, 200]);
        Vec::<f32>::try_from(back.flatten(0, -1)).unwrap()
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
