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
