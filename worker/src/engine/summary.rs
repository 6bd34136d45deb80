//! From a raw, low-resolution CAM to what a person reads: a map over the original image in
//! [0, 1], its peak, and the box around the strongest region — all in original-image pixels.

use std::collections::BTreeMap;

use serde::Serialize;
use xcam_shared::bundle::Bundle;

use super::{
    model::RawOutput,
    preprocess::{Geometry, to_original},
};

/// Everything xcam says about one image.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub width: u32,
    pub height: u32,
    /// Probability of every label.
    pub predictions: BTreeMap<String, f32>,
    pub top_label: String,
    pub top_probability: f32,
    /// The device that ran the model.
    pub device: String,
    pub cams: Vec<CamSummary>,
}

/// One explained label.
#[derive(Debug, Clone, Serialize)]
pub struct CamSummary {
    pub label: String,
    pub method: String,
    /// Pixel [x, y] of the map's maximum; `null` for a blank map.
    pub peak: Option<[u32; 2]>,
    /// [x0, y0, x1, y1] (x1, y1 exclusive) of the largest connected region at or above half the
    /// peak; `null` for a blank map.
    pub bbox: Option<[u32; 4]>,
    /// The map's maximum before normalisation: how strong the evidence was. 0 means the label's
    /// score has no positive evidence anywhere (a blank map).
    pub raw_max: f32,
    /// H×W, row-major, min–max normalised to [0, 1].
    #[serde(skip)]
    pub map: Vec<f32>,
}

/// Upsamples and summarises every CAM of one image.
pub fn finish(raw: &RawOutput, geometry: &Geometry, bundle: &Bundle, device: &str) -> Explanation {
    let labels = bundle.labels();
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
            let map = normalise(to_original(&c.map, c.h, c.w, geometry), c.raw_max);
            let (peak, bbox) = if c.raw_max > 0.0 {
                let peak = peak(&map, geometry.width);
                (
                    Some(peak),
                    Some(strongest_region(&map, geometry.width, geometry.height, 0.5)),
                )
            } else {
                (None, None)
            };
            CamSummary {
                label: labels[c.label].clone(),
                method: c.method.to_string(),
                peak,
                bbox,
                raw_max: c.raw_max,
                map,
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
        device: device.to_owned(),
        cams,
    }
}

/// Per-image min–max normalisation, as pytorch-grad-cam does; a blank map stays all zeros.
fn normalise(mut v: Vec<f32>, raw_max: f32) -> Vec<f32> {
    if raw_max <= 0.0 {
        v.iter_mut().for_each(|x| *x = 0.0);
        return v;
    }
    let (lo, hi) = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let scale = 1.0 / (hi - lo + 1e-7);
    v.iter_mut().for_each(|x| *x = (*x - lo) * scale);
    v
}

/// [x, y] of the first maximum.
pub fn peak(map: &[f32], width: u32) -> [u32; 2] {
    let i = map
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 { (i, x) } else { best }
        })
        .0 as u32;
    [i % width, i / width]
}

/// Box of the largest 8-connected region where `map >= threshold × max`.
pub fn strongest_region(map: &[f32], width: u32, height: u32, threshold: f32) -> [u32; 4] {
    let (w, h) = (width as usize, height as usize);
    let cut = threshold * map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut seen = vec![false; map.len()];
    let mut stack = Vec::new();
    let mut best = (0usize, [0u32; 4]);
    for start in 0..map.len() {
        if seen[start] || map[start] < cut {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut count, mut x0, mut y0, mut x1, mut y1) = (0usize, w, h, 0usize, 0usize);
        while let Some(p) = stack.pop() {
            let (x, y) = (p % w, p / w);
            count += 1;
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
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
            best = (count, [x0 as u32, y0 as u32, x1 as u32 + 1, y1 as u32 + 1]);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(peak(&map, w), [0, 0]);
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
