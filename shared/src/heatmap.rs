//! A CAM from its raw grid to what a person sees: the map upsampled onto the original image's
//! pixels and min–max normalised, its colour overlay as a PNG, and the map as a NumPy `.npy`.
//!
//! Shared by the worker, which computes the grids and summarises the maps, and the producer,
//! which renders an item's overlay or map when someone first asks for it: a result keeps a grid
//! of a few dozen numbers, not megabytes of pixels per image. Overlays are built from pixels
//! only: nothing of the input file's metadata is carried over.

use std::{io::Cursor, ops::Range, sync::LazyLock};

use image::{
    ImageEncoder, RgbImage,
    codecs::png::{CompressionType, FilterType, PngEncoder},
};
use serde::{Deserialize, Serialize};

use crate::imaging::GrayImage;

/// How the original image sat in the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A CAM at the target layer's resolution: `h`×`w`, row-major, ReLU'd, not normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grid {
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// `h × w` values, row-major.
    pub values: Vec<f32>,
}

impl Grid {
    /// Whether the grid holds `h × w` values (a stored one is checked before use).
    pub fn is_consistent(&self) -> bool {
        self.h > 0 && self.w > 0 && self.values.len() == self.h * self.w
    }
}

/// The map over the original image, in [0, 1]: what overlays, `.npy` files and summaries show.
pub fn full_map(grid: &Grid, raw_max: f32, geometry: &Geometry) -> Vec<f32> {
    normalise(upsample(grid, geometry), raw_max)
}

/// Maps a grid onto the original image's pixels (H×W), bilinearly with half-pixel centres
/// (align_corners = false, as cv2.resize and pytorch-grad-cam do).
pub fn upsample(grid: &Grid, geometry: &Geometry) -> Vec<f32> {
    let rows = Upsampled::new(grid, geometry);
    let mut out = vec![0.0; rows.width() * rows.height()];
    for (y, row) in out.chunks_exact_mut(rows.width()).enumerate() {
        rows.row(y, row);
    }
    out
}

/// A grid upsampled onto the original image, one row at a time: a summary reads a full-size map
/// without holding it (a 2 500 × 2 000 radiograph's map is 20 MB a label).
pub struct Upsampled {
    width: usize,
    /// Each grid row widened to the image's width.
    wide: Vec<f32>,
    /// Per output row: the two widened rows it blends, and the weight of the second.
    rows: Vec<(usize, usize, f32)>,
}

impl Upsampled {
    pub fn new(grid: &Grid, geometry: &Geometry) -> Self {
        let (h, w) = (grid.h, grid.w);
        let (width, height) = (geometry.width as usize, geometry.height as usize);
        let (out_w, out_h, left, top) = if geometry.square == 0 {
            (width, height, 0, 0)
        } else {
            let (left, top) = geometry.offset();
            (
                geometry.square as usize,
                geometry.square as usize,
                left as usize,
                top as usize,
            )
        };
        // Source coordinate and blend weight of each output column and row.
        let axis =
            |n_out: usize, n_in: usize, from: usize, count: usize| -> Vec<(usize, usize, f32)> {
                let scale = n_in as f32 / n_out as f32;
                (from..from + count)
                    .map(|i| {
                        let src = ((i as f32 + 0.5) * scale - 0.5).max(0.0);
                        let i0 = (src.floor() as usize).min(n_in - 1);
                        let i1 = (i0 + 1).min(n_in - 1);
                        (i0, i1, src - i0 as f32)
                    })
                    .collect()
            };
        let cols = axis(out_w, w, left, width);
        // Separable: each source row is widened once, then every output row blends two of them.
        let mut wide = Vec::with_capacity(h * width);
        for src in grid.values.chunks_exact(w) {
            wide.extend(
                cols.iter()
                    .map(|&(x0, x1, fx)| src[x0] + (src[x1] - src[x0]) * fx),
            );
        }
        Self {
            width,
            wide,
            rows: axis(out_h, h, top, height),
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.rows.len()
    }

    /// Writes row `y` (`width` values) into `out`.
    pub fn row(&self, y: usize, out: &mut [f32]) {
        self.row_span(y, 0..self.width, out);
    }

    /// Writes the columns `columns` of row `y` into `out[columns]`, leaving the rest of `out`
    /// as it was; each value exactly as [`Self::row`] writes it.
    pub fn row_span(&self, y: usize, columns: Range<usize>, out: &mut [f32]) {
        let (y0, y1, fy) = self.rows[y];
        let w = self.width;
        let (upper, lower) = (
            &self.wide[y0 * w..][columns.clone()],
            &self.wide[y1 * w..][columns.clone()],
        );
        for ((o, &a), &b) in out[columns].iter_mut().zip(upper).zip(lower) {
            *o = a + (b - a) * fy;
        }
    }

    /// The rows in runs that blend the same two grid rows, top to bottom. Down a run each
    /// column is `a + (b − a)·fy` with `fy` growing, monotone even as rounded, so the run's
    /// lowest and highest values lie in its first or last row.
    pub fn runs(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = 0;
        (1..=self.rows.len()).filter_map(move |y| {
            let pair = |y: usize| (self.rows[y].0, self.rows[y].1);
            (y == self.rows.len() || pair(y) != pair(start)).then(|| {
                let run = start..y;
                start = y;
                run
            })
        })
    }

    /// The lowest and highest value of the rows `rows` (one run of [`Self::runs`]), from its
    /// first and last row only.
    pub fn run_range(&self, rows: &Range<usize>) -> (f32, f32) {
        let (a, b) = (self.row_range(rows.start), self.row_range(rows.end - 1));
        (a.0.min(b.0), a.1.max(b.1))
    }

    /// The lowest and highest value of row `y`, without writing it out.
    pub fn row_range(&self, y: usize) -> (f32, f32) {
        // Independent lanes, so the compiler keeps eight minima and maxima in one register each.
        const LANES: usize = 8;
        let w = self.width;
        let (y0, y1, fy) = self.rows[y];
        let (upper, lower) = (&self.wide[y0 * w..][..w], &self.wide[y1 * w..][..w]);
        let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
        let (uppers, upper_rest) = upper.as_chunks::<LANES>();
        let (lowers, lower_rest) = lower.as_chunks::<LANES>();
        for (a, b) in uppers.iter().zip(lowers) {
            for i in 0..LANES {
                let v = a[i] + (b[i] - a[i]) * fy;
                // Comparisons, not f32::min/max: their NaN rules cost three instructions a lane
                // where these cost one (a map holds no NaN).
                lo[i] = if v < lo[i] { v } else { lo[i] };
                hi[i] = if v > hi[i] { v } else { hi[i] };
            }
        }
        let rest = upper_rest.iter().zip(lower_rest);
        let lanes = lo.into_iter().zip(hi);
        rest.map(|(&a, &b)| {
            let v = a + (b - a) * fy;
            (v, v)
        })
        .chain(lanes)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (l, h)| {
            (lo.min(l), hi.max(h))
        })
    }
}

/// The affine map [`normalise`] applies: `(x − lo) · scale`, None for a blank map.
pub fn normaliser((lo, hi): (f32, f32), raw_max: f32) -> Option<impl Fn(f32) -> f32 + Copy> {
    let scale = 1.0 / (hi - lo + 1e-7);
    (raw_max > 0.0).then_some(move |x: f32| (x - lo) * scale)
}

/// The least value in `[lo, hi]` that `normalise` takes to `level` or above, for comparing raw
/// values with a normalised level without normalising them: `normalise` is monotone (a rounded
/// subtraction, then a rounded product with a positive scale), so for every `v` in `[lo, hi]`,
/// `v >= threshold` exactly when `normalise(v) >= level`. Infinity when not even `hi` reaches it.
pub fn raw_threshold(normalise: impl Fn(f32) -> f32, level: f32, (lo, hi): (f32, f32)) -> f32 {
    // f32s in value order as u32s in integer order, so the search halves the floats between.
    let key = |v: f32| {
        let bits = v.to_bits();
        if v.is_sign_negative() {
            !bits
        } else {
            bits | 0x8000_0000
        }
    };
    let value = |k: u32| {
        f32::from_bits(if k & 0x8000_0000 != 0 {
            k & 0x7fff_ffff
        } else {
            !k
        })
    };
    if normalise(lo) >= level {
        return lo;
    }
    if normalise(hi) < level {
        return f32::INFINITY;
    }
    // normalise(value(below)) < level <= normalise(value(reaching)).
    let (mut below, mut reaching) = (key(lo), key(hi));
    while reaching - below > 1 {
        let mid = below + (reaching - below) / 2;
        if normalise(value(mid)) >= level {
            reaching = mid;
        } else {
            below = mid;
        }
    }
    value(reaching)
}

/// Per-image min–max normalisation, as pytorch-grad-cam does; a blank map stays all zeros.
pub fn normalise(mut v: Vec<f32>, raw_max: f32) -> Vec<f32> {
    let range = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    match normaliser(range, raw_max) {
        Some(f) => v.iter_mut().for_each(|x| *x = f(*x)),
        None => v.iter_mut().for_each(|x| *x = 0.0),
    }
    v
}

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
    let mut out = Vec::new();
    // Fast compression: the default level costs several times the CPU for a few percent.
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
    use proptest::strategy::{Just, Strategy};

    use super::*;

    proptest::proptest! {
        /// Comparing a raw value with the threshold says what normalising it and comparing
        /// with the level says, for values anywhere in the range, near the threshold included.
        #[test]
        fn a_raw_threshold_sorts_values_as_their_normalised_level_does(
            lo in -5.0f32..5.0,
            span in 1e-6f32..10.0,
            raw_max in 0.01f32..10.0,
            level in 0.0f32..1.0,
            at in proptest::collection::vec(0.0f32..=1.0, 1..64),
        ) {
            let hi = lo + span;
            let normalise = normaliser((lo, hi), raw_max).unwrap();
            let threshold = raw_threshold(normalise, level, (lo, hi));
            let near = [threshold, f32::from_bits(threshold.to_bits().wrapping_sub(1)), f32::from_bits(threshold.to_bits() + 1)];
            for v in at.iter().map(|t| lo + span * t).chain(near).filter(|v| (lo..=hi).contains(v)) {
                proptest::prop_assert_eq!(v >= threshold, normalise(v) >= level, "v {} threshold {}", v, threshold);
            }
        }

        /// A run's range, read from its two end rows, is exactly the range of all its rows.
        #[test]
        fn a_runs_extremes_lie_in_its_end_rows(
            (h, w, values) in (1usize..9, 1usize..9).prop_flat_map(|(h, w)| {
                (Just(h), Just(w), proptest::collection::vec(-2f32..2.0, h * w))
            }),
            width in 1u32..300,
            height in 1u32..300,
        ) {
            let grid = Grid { h, w, values };
            let map = Upsampled::new(&grid, &Geometry { width, height, square: 0 });
            let mut covered = 0;
            for rows in map.runs() {
                proptest::prop_assert_eq!(rows.start, covered);
                covered = rows.end;
                let every_row = rows.clone().map(|y| map.row_range(y)).fold(
                    (f32::INFINITY, f32::NEG_INFINITY),
                    |(lo, hi), (l, h)| (lo.min(l), hi.max(h)),
                );
                proptest::prop_assert_eq!(map.run_range(&rows), every_row);
            }
            proptest::prop_assert_eq!(covered, height as usize);
        }
    }

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
    fn a_grid_upsamples_onto_the_letterboxed_image_only() {
        // A 2×2 grid over a 4×2 image letterboxed into a 4×4 square: the image is the middle
        // two rows of the square, so it sees the grid's blend of top and bottom.
        let grid = Grid {
            h: 2,
            w: 2,
            values: vec![0.0, 0.0, 1.0, 1.0],
        };
        let geometry = Geometry {
            width: 4,
            height: 2,
            square: 4,
        };
        let map = upsample(&grid, &geometry);
        assert_eq!(map.len(), 8);
        assert!(map.iter().all(|v| (0.25..=0.75).contains(v)), "{map:?}");
        assert!(map[4] > map[0], "the lower row is nearer the bright half");
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
