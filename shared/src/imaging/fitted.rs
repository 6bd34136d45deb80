//! A plane fitted to a model's input size: what a worker reads instead of the full plane.
//!
//! Ingestion writes one beside each full-resolution plane (which the API keeps for overlays), so
//! a worker never decodes or resizes a full-size radiograph: it reads width × height samples and
//! normalises them. The format is raw little-endian 16-bit samples behind a short header, as
//! there is nothing to inflate; like the full plane it holds pixels and nothing else, plus the
//! geometry that maps a map back onto the original image.

use std::borrow::Cow;

use fast_image_resize::{
    FilterType, ResizeAlg, ResizeOptions, Resizer,
    images::{TypedImage, TypedImageRef},
    pixels::F32,
};

use super::{DecodeError, GrayImage};
use crate::{
    bundle::{InputSpec, ResizePolicy},
    heatmap::Geometry,
};

const MAGIC: &[u8; 8] = b"XCAMFIT1";
const HEADER: usize = MAGIC.len() + 5 * 4;

/// A model-sized image and where it came from.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The original image's size, and the letterbox square if there was one.
    pub geometry: Geometry,
    /// At the model's input size, row-major, in [0, 1].
    pub image: GrayImage,
}

/// A model's input size and how an image is brought to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub width: u32,
    pub height: u32,
    pub resize: ResizePolicy,
}

impl From<&InputSpec> for Fit {
    fn from(spec: &InputSpec) -> Self {
        Self {
            width: spec.width,
            height: spec.height,
            resize: spec.resize,
        }
    }
}

impl Fit {
    /// Where the copy of the full plane `plane_key` fitted this way lives: under
    /// [`prefix`]`(plane_key)`, so removing a plane's fitted copies is one prefix.
    pub fn key(&self, plane_key: &str) -> String {
        let resize = match self.resize {
            ResizePolicy::Stretch => "stretch",
            ResizePolicy::Letterbox => "letterbox",
        };
        format!(
            "{}/{}x{}-{resize}.fit",
            prefix(plane_key),
            self.width,
            self.height
        )
    }
}

/// Letterboxes (if asked) and resizes `image` to the model's size: bilinear, antialiased when
/// shrinking (Pillow's and torchvision's resize), SIMD-accelerated.
pub fn fit(image: &GrayImage, to: Fit) -> Fitted {
    let Fit {
        width,
        height,
        resize,
    } = to;
    let mut geometry = Geometry {
        width: image.width,
        height: image.height,
        square: 0,
    };
    let mut plane = Cow::Borrowed(image.pixels.as_slice());
    let (mut from_w, mut from_h) = (image.width, image.height);
    if resize == ResizePolicy::Letterbox && from_w != from_h {
        let side = from_w.max(from_h);
        // Pad with the image's own minimum: with zeros, a bright-background image would get
        // dark bars the model has never seen.
        let fill = image.pixels.iter().copied().fold(f32::INFINITY, f32::min);
        let mut square = vec![fill; side as usize * side as usize];
        let (left, top) = ((side - from_w) / 2, (side - from_h) / 2);
        for (y, row) in image.pixels.chunks_exact(from_w as usize).enumerate() {
            let at = (top as usize + y) * side as usize + left as usize;
            square[at..at + row.len()].copy_from_slice(row);
        }
        plane = Cow::Owned(square);
        (from_w, from_h, geometry.square) = (side, side, side);
    }
    if (from_w, from_h) != (width, height) {
        let src = TypedImageRef::<F32>::new(from_w, from_h, bytemuck::cast_slice(&plane))
            .expect("the plane holds width × height pixels");
        let mut dst = TypedImage::<F32>::new(width, height);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        Resizer::new()
            .resize_typed(&src, &mut dst, &options)
            .expect("single-channel f32 images of non-zero size always resize");
        plane = Cow::Owned(bytemuck::cast_slice(dst.pixels()).to_vec());
    }
    // To the 16-bit levels it is stored in: the image a worker reads back is this one exactly,
    // so `xcam-worker explain` and the pipeline give one image the same map.
    let pixels = plane
        .iter()
        .map(|&v| super::level16(v) as f32 / 65_535.0)
        .collect();
    Fitted {
        geometry,
        image: GrayImage {
            width,
            height,
            pixels,
        },
    }
}

/// The "directory" holding a plane's fitted copies.
pub fn prefix(plane_key: &str) -> String {
    format!("{plane_key}.fitted")
}

pub fn encode(fitted: &Fitted) -> Vec<u8> {
    let (g, image) = (&fitted.geometry, &fitted.image);
    let mut out = Vec::with_capacity(HEADER + image.pixels.len() * 2);
    out.extend_from_slice(MAGIC);
    for v in [g.width, g.height, g.square, image.width, image.height] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in levels(fitted) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A fitted plane as stored: its geometry and its 16-bit levels, not yet converted to floats
/// (the engine does that on its device).
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub geometry: Geometry,
    pub width: u32,
    pub height: u32,
    /// width × height little-endian `u16` levels, row-major: 65 535 is white.
    pub levels: &'a [u8],
}

/// Checks a fitted plane's header and size without converting a sample; anything [`encode`]
/// did not write is `Corrupt`.
pub fn read(bytes: &[u8]) -> Result<Stored<'_>, DecodeError> {
    let header = bytes.get(..HEADER).ok_or(DecodeError::Corrupt)?;
    if &header[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::Corrupt);
    }
    let field = |i: usize| {
        let at = MAGIC.len() + 4 * i;
        u32::from_le_bytes(header[at..at + 4].try_into().expect("four bytes"))
    };
    let geometry = Geometry {
        width: field(0),
        height: field(1),
        square: field(2),
    };
    let (width, height) = (field(3), field(4));
    let levels = &bytes[HEADER..];
    if width == 0 || height == 0 || levels.len() as u64 != u64::from(width) * u64::from(height) * 2
    {
        return Err(DecodeError::Corrupt);
    }
    Ok(Stored {
        geometry,
        width,
        height,
        levels,
    })
}

/// Reads a fitted plane back as floats in [0, 1].
pub fn decode(bytes: &[u8]) -> Result<Fitted, DecodeError> {
    let stored = read(bytes)?;
    let pixels = stored
        .levels
        .chunks_exact(2)
        .map(|s| f32::from(u16::from_le_bytes([s[0], s[1]])) / 65_535.0)
        .collect();
    Ok(Fitted {
        geometry: stored.geometry,
        image: GrayImage {
            width: stored.width,
            height: stored.height,
            pixels,
        },
    })
}

/// A fitted image's pixels as the 16-bit levels it is stored in (exactly: [`fit`] quantised
/// them).
pub fn levels(fitted: &Fitted) -> Vec<u16> {
    fitted
        .image
        .pixels
        .iter()
        .map(|&v| super::level16(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32) -> GrayImage {
        let pixels = (0..width * height)
            .map(|i| (i % width) as f32 / width as f32)
            .collect();
        GrayImage {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn a_fitted_plane_reads_back_as_written() {
        let to = Fit {
            width: 64,
            height: 64,
            resize: ResizePolicy::Letterbox,
        };
        let fitted = fit(&image(300, 200), to);
        assert_eq!(fitted.geometry.square, 300);
        let back = decode(&encode(&fitted)).unwrap();
        assert_eq!(back.geometry, fitted.geometry);
        assert_eq!((back.image.width, back.image.height), (64, 64));
        assert_eq!(back.image.pixels, fitted.image.pixels, "exactly");
    }

    #[test]
    fn anything_else_is_corrupt() {
        let to = Fit {
            width: 32,
            height: 32,
            resize: ResizePolicy::Stretch,
        };
        let bytes = encode(&fit(&image(40, 40), to));
        let corrupt = |b: &[u8]| matches!(decode(b), Err(DecodeError::Corrupt));
        assert!(corrupt(&bytes[..bytes.len() - 1]));
        assert!(corrupt(b"XCAMFIT1"));
        let mut forged = bytes.clone();
        forged[0] = b'Y';
        assert!(corrupt(&forged));
    }

    #[test]
    fn fitted_copies_live_under_their_plane() {
        let to = Fit {
            width: 128,
            height: 128,
            resize: ResizePolicy::Stretch,
        };
        let key = to.key("planes/ab/abcd.png");
        assert_eq!(key, "planes/ab/abcd.png.fitted/128x128-stretch.fit");
        assert!(key.starts_with(&prefix("planes/ab/abcd.png")));
    }
}
