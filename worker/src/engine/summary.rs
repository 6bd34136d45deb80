//! From a raw, low-resolution CAM to what a person reads: a map over the original image in
//! [0, 1], its peak, and the box around the strongest region — all in original-image pixels.

use std::{collections::BTreeMap, ops::Range};

use serde::Serialize;
use xcam_shared::{
    bundle::Bundle,
    db::results::StoredCam,
    heatmap::{self, Geometry, Grid, Upsampled},
};

use super::model::RawOutput;

/// Everything xcam says about one image.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub width: u32,
    pub height: u32,
    /// Probability of every label.
    pub predictions: BTreeMap<String, f32>,
    pub top_label: String,
    pub top_probability: f32,
    /// The labels at or above their threshold, most probable first; empty: no finding.
    pub positive_labels: Vec<String>,
    /// Out-of-distribution score, threshold and verdict; `null` when the bundle has no
    /// reference (the score is unavailable).
    pub ood_score: Option<f32>,
    pub ood_threshold: Option<f32>,
    pub out_of_distribution: Option<bool>,
    /// The device that ran the model.
    pub device: String,
    /// Each explained label: peak and box in original-image pixels, the raw maximum and the
    /// grid it was drawn from, exactly as a result stores it.
    pub cams: Vec<StoredCam>,
    /// How the image sat in the model's input.
    #[serde(skip)]
    pub geometry: Geometry,
}

impl Explanation {
    /// The map of `cams[i]` over the original image (H×W, row-major, in [0, 1]), drawn from its
    /// grid as the API draws overlays.
    pub fn map(&self, i: usize) -> Vec<f32> {
        let cam = &self.cams[i];
        heatmap::full_map(&cam.grid, cam.raw_max, &self.geometry)
    }
}

/// Upsamples and summarises every CAM of one image.
pub fn finish(raw: &RawOutput, geometry: &Geometry, bundle: &Bundle, device: &str) -> Explanation {
    let labels = bundle.labels();
    let thresholds = &bundle.manifest.model.thresholds;
    let is_positive = |label: usize| raw.probabilities[label] >= thresholds[label];
    let mut positive: Vec<usize> = (0..raw.probabilities.len())
        .filter(|&l| is_positive(l))
        .collect();
    positive.sort_by(|a, b| raw.probabilities[*b].total_cmp(&raw.probabilities[*a]));
    let ood_threshold = bundle.manifest.reference.as_ref().map(|r| r.threshold);
    let (top, top_probability) = raw
        .probabilities
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0));
    let cams = raw
        .cams
        .iter()
        .map(|c| {
            let (peak, bbox) = locate(&c.grid, c.raw_max, geometry).unzip();
            StoredCam {
                label: labels[c.label].clone(),
                method: c.method,
                peak,
                bbox,
                raw_max: c.raw_max,
                grid: c.grid.clone(),
                positive: Some(is_positive(c.label)),
                faithfulness: c.faithfulness,
            }
        })
        .collect();
    Explanation {
        width: geometry.width,
        height: geometry.height,
        predictions: labels
            .iter()
            .cloned()
            .zip(raw.probabilities.iter().copied())
            .collect(),
        top_label: labels.get(top).cloned().unwrap_or_default(),
        top_probability,
        positive_labels: positive.iter().map(|&l| labels[l].clone()).collect(),
        ood_score: raw.ood_score,
        ood_threshold,
        out_of_distribution: raw.ood_score.zip(ood_threshold).map(|(s, t)| s > t),
        device: device.to_owned(),
        cams,
        geometry: *geometry,
    }
}

/// The peak ([x, y] of the first maximum) and the strongest region of a CAM's map over the
/// original image (`heatmap::full_map`), or None for a blank map.
///
/// The map is never held whole, nor every pixel drawn. Down a run of rows blending the same two
/// grid rows ([`Upsampled::runs`]) each column is monotone, so a run's extremes lie in its first
/// and last rows: the map's range comes from those two rows of each run, a run is drawn only if
/// they reach the region's cut, and then only in the columns where one of them does — no other
/// pixel of the run can. Normalising is monotone, so the map's maximum is the normalised highest
/// value, and a raw value reaches a level exactly when it reaches the level's raw threshold
/// ([`heatmap::raw_threshold`]).
fn locate(grid: &Grid, raw_max: f32, geometry: &Geometry) -> Option<([u32; 2], [u32; 4])> {
    let map = Upsampled::new(grid, geometry);
    let runs: Vec<(Range<usize>, (f32, f32))> = map
        .runs()
        .map(|rows| {
            let range = map.run_range(&rows);
            (rows, range)
        })
        .collect();
    let range = runs.iter().fold(
        (f32::INFINITY, f32::NEG_INFINITY),
        |(lo, hi), (_, (l, h))| (lo.min(*l), hi.max(*h)),
    );
    let normalise = heatmap::normaliser(range, raw_max)?;
    let top = normalise(range.1);
    // Rows are compared raw with the levels' raw thresholds, never normalised.
    let cut = heatmap::raw_threshold(normalise, 0.5 * top, range);
    let peak_at = heatmap::raw_threshold(normalise, top, range);
    let mut regions = RegionScan::new(cut);
    let width = map.width();
    let (mut row, mut last, mut peak) = (vec![0.0; width], vec![0.0; width], None);
    let mut spans = Vec::new();
    for (rows, (_, run_high)) in runs {
        if run_high < cut {
            regions.gap();
            continue;
        }
        map.row(rows.start, &mut row);
        map.row(rows.end - 1, &mut last);
        spans_reaching(&row, &last, cut, &mut spans);
        for y in rows {
            for span in &spans {
                map.row_span(y, span.clone(), &mut row);
            }
            // The peak reaches the cut, so it lies in a span; spans run left to right.
            if peak.is_none() {
                peak = spans.iter().find_map(|span| {
                    let x = first_where(&row[span.clone()], |v| v >= peak_at)?;
                    Some([(span.start + x) as u32, y as u32])
                });
            }
            regions.push(&row, &spans, y);
        }
    }
    Some((peak?, regions.largest_box()))
}

/// The index of the first value for which `hit` holds, eight at a time: a chunk's tests are
/// gathered into a mask with no branch per value, and the first set bit is the answer.
fn first_where(values: &[f32], hit: impl Fn(f32) -> bool) -> Option<usize> {
    const LANES: usize = 8;
    let (chunks, rest) = values.as_chunks::<LANES>();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut hits = [false; LANES];
        for (h, &v) in hits.iter_mut().zip(chunk) {
            *h = hit(v);
        }
        let mask = hits
            .iter()
            .enumerate()
            .fold(0u32, |mask, (j, &h)| mask | (u32::from(h) << j));
        if mask != 0 {
            return Some(i * LANES + mask.trailing_zeros() as usize);
        }
    }
    let tail = chunks.len() * LANES;
    rest.iter().position(|&v| hit(v)).map(|j| tail + j)
}

/// The maximal runs of columns where `first` or `last` reaches `cut`, left to right.
fn spans_reaching(first: &[f32], last: &[f32], cut: f32, spans: &mut Vec<Range<usize>>) {
    spans.clear();
    let mut start = None;
    for (x, (&a, &b)) in first.iter().zip(last).enumerate() {
        match (a >= cut || b >= cut, start) {
            (true, None) => start = Some(x),
            (false, Some(s)) => {
                spans.push(s..x);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push(s..first.len());
    }
}

/// Finds the box of the largest 8-connected region where the map is at least `cut`, fed one
/// row at a time.
///
/// Labels runs of qualifying pixels rather than pixels: a CAM upsampled to a full radiograph is
/// a few smooth blobs, so a row holds a handful of runs where it holds thousands of pixels.
struct RegionScan {
    cut: f32,
    regions: Regions,
    above: Vec<Run>,
    current: Vec<Run>,
}

impl RegionScan {
    fn new(cut: f32) -> Self {
        Self {
            cut,
            regions: Regions::default(),
            above: Vec::new(),
            current: Vec::new(),
        }
    }

    /// Row `y`, after row `y - 1`: only its columns in `spans` are read (left to right, none
    /// touching), every other column being below the cut.
    fn push(&mut self, row: &[f32], spans: &[Range<usize>], y: usize) {
        let cut = self.cut;
        self.current.clear();
        for span in spans {
            let mut x = span.start;
            while x < span.end {
                let Some(start) = first_where(&row[x..span.end], |v| v >= cut).map(|i| x + i)
                else {
                    break;
                };
                let end =
                    first_where(&row[start..span.end], |v| v < cut).map_or(span.end, |i| start + i);
                let id = self.regions.add(start, end, y);
                // 8-connected: runs touch when their column spans overlap or meet diagonally.
                for run in self
                    .above
                    .iter()
                    .filter(|r| r.start <= end && start <= r.end)
                {
                    self.regions.join(id, run.region);
                }
                self.current.push(Run {
                    start,
                    end,
                    region: id,
                });
                x = end;
            }
        }
        std::mem::swap(&mut self.above, &mut self.current);
    }

    /// A row with no pixel at the cut.
    fn gap(&mut self) {
        self.above.clear();
    }

    fn largest_box(mut self) -> [u32; 4] {
        self.regions.largest_box()
    }
}

/// A horizontal run `[start, end)` of qualifying pixels in one row.
struct Run {
    start: usize,
    end: usize,
    region: usize,
}

/// Union–find over runs, each root carrying its region's pixel count and box.
#[derive(Default)]
struct Regions {
    parent: Vec<usize>,
    count: Vec<usize>,
    /// [x0, y0, x1, y1], x1 and y1 exclusive.
    bbox: Vec<[usize; 4]>,
}

impl Regions {
    fn add(&mut self, start: usize, end: usize, y: usize) -> usize {
        let id = self.parent.len();
        self.parent.push(id);
        self.count.push(end - start);
        self.bbox.push([start, y, end, y + 1]);
        id
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a == b {
            return;
        }
        // The older run stays the root, so that ties go to the region met first in scan order.
        let (keep, gone) = (a.min(b), a.max(b));
        self.parent[gone] = keep;
        self.count[keep] += self.count[gone];
        let (k, g) = (self.bbox[keep], self.bbox[gone]);
        self.bbox[keep] = [
            k[0].min(g[0]),
            k[1].min(g[1]),
            k[2].max(g[2]),
            k[3].max(g[3]),
        ];
    }

    fn largest_box(&mut self) -> [u32; 4] {
        let mut best: Option<usize> = None;
        for i in 0..self.parent.len() {
            if self.root(i) == i && best.is_none_or(|b| self.count[i] > self.count[b]) {
                best = Some(i);
            }
        }
        best.map_or([0; 4], |b| self.bbox[b].map(|v| v as u32))
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;

    /// Box of the largest 8-connected region where `map >= threshold × max`.
    fn strongest_region(map: &[f32], width: u32, height: u32, threshold: f32) -> [u32; 4] {
        let cut = threshold * map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut scan = RegionScan::new(cut);
        for (y, row) in map
            .chunks_exact(width as usize)
            .take(height as usize)
            .enumerate()
        {
            let whole_row = 0..row.len();
            scan.push(row, std::slice::from_ref(&whole_row), y);
        }
        scan.largest_box()
    }

    #[test]
    fn strongest_region_picks_the_largest_blob_not_the_first() {
        // A 1-pixel hot spot at (0,0) and a 2×3 warm block at x 3..5, y 1..4.
        let (w, h) = (6u32, 5u32);
        let mut map = vec![0.0f32; 30];
        map[0] = 1.0;
        for y in 1..4 {
            for x in 3..5 {
                map[y * 6 + x] = 0.8;
            }
        }
        assert_eq!(strongest_region(&map, w, h, 0.5), [3, 1, 5, 4]);
    }

    /// Pixel by pixel: the definition the run labelling must agree with.
    fn flood_fill_box(map: &[f32], w: usize, h: usize, cut: f32) -> [u32; 4] {
        let mut seen = vec![false; map.len()];
        let mut best = (0usize, [0u32; 4]);
        for start in 0..map.len() {
            if seen[start] || map[start] < cut {
                continue;
            }
            seen[start] = true;
            let (mut stack, mut count, mut b) = (vec![start], 0, [w, h, 0, 0]);
            while let Some(p) = stack.pop() {
                let (x, y) = (p % w, p / w);
                count += 1;
                b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        let q = ny * w + nx;
                        if !seen[q] && map[q] >= cut {
                            seen[q] = true;
                            stack.push(q);
                        }
                    }
                }
            }
            if count > best.0 {
                best = (count, b.map(|v| v as u32));
            }
        }
        best.1
    }

    proptest::proptest! {
        #[test]
        fn run_labelling_agrees_with_a_pixel_flood_fill(
            (w, h, cells) in (1usize..24, 1usize..24).prop_flat_map(|(w, h)| {
                (proptest::strategy::Just(w), proptest::strategy::Just(h), proptest::collection::vec(0u8..4, w * h))
            })
        ) {
            let map: Vec<f32> = cells.iter().map(|&c| f32::from(c) / 3.0).collect();
            let cut = 0.5 * map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            proptest::prop_assert_eq!(
                strongest_region(&map, w as u32, h as u32, 0.5),
                flood_fill_box(&map, w, h, cut)
            );
        }
    }

    proptest::proptest! {
        /// The row-at-a-time summary is the summary of the whole map, to the bit.
        #[test]
        fn locating_row_by_row_agrees_with_the_full_map(
            (h, w, values) in (1usize..9, 1usize..9).prop_flat_map(|(h, w)| {
                (proptest::strategy::Just(h), proptest::strategy::Just(w), proptest::collection::vec(0f32..2.0, h * w))
            }),
            (width, height) in (1u32..80, 1u32..80),
            letterbox in proptest::bool::ANY,
        ) {
            let geometry = Geometry { width, height, square: if letterbox { width.max(height) } else { 0 } };
            let grid = Grid { h, w, values };
            let raw_max = grid.values.iter().copied().fold(0.0, f32::max);
            let map = heatmap::full_map(&grid, raw_max, &geometry);
            let first_max = map.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
            proptest::prop_assert_eq!(
                locate(&grid, raw_max, &geometry),
                Some(([first_max % width, first_max / width], strongest_region(&map, width, height, 0.5)))
            );
            proptest::prop_assert_eq!(locate(&grid, 0.0, &geometry), None);
        }
    }

    #[test]
    fn diagonal_neighbours_join_one_region() {
        let mut map = vec![0.0f32; 16];
        for i in 0..4 {
            map[i * 4 + i] = 1.0;
        }
        assert_eq!(strongest_region(&map, 4, 4, 0.5), [0, 0, 4, 4]);
    }
}
