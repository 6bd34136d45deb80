//! `xcam-worker explain`: explain a few images from the command line, no services needed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde::Serialize;
use xcam_shared::{heatmap, imaging};

use crate::engine::{Engine, Explanation, Target};

/// What `<stem>.json` holds.
#[derive(Debug, Serialize)]
struct Record<'a> {
    image: String,
    model: &'a str,
    model_version: &'a str,
    #[serde(flatten)]
    explanation: &'a Explanation,
    files: Vec<CamFiles>,
}

#[derive(Debug, Serialize)]
struct CamFiles {
    label: String,
    overlay: String,
    cam: String,
}

/// Explains every image (in one or more dynamic batches) and writes its files into `out`.
pub fn run(
    engine: &Engine,
    images: &[PathBuf],
    target: &Target,
    out: &Path,
) -> anyhow::Result<Vec<Explanation>> {
    engine.check_target(target)?;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // Queue everything first so the inference thread can batch; then collect in order.
    let mut pending = Vec::with_capacity(images.len());
    for path in images {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let image = imaging::decode(&bytes)
            .with_context(|| format!("{}: cannot use this image", path.display()))?;
        let queued = engine.enqueue(&image, target.clone())?;
        pending.push((path, image, queued));
    }
    let mut results = Vec::with_capacity(pending.len());
    for (path, image, queued) in pending {
        let (explanation, _) = queued.wait()?.finish();
        write_outputs(engine, path, &image, &explanation, out)?;
        results.push(explanation);
    }
    Ok(results)
}

fn write_outputs(
    engine: &Engine,
    path: &Path,
    image: &imaging::GrayImage,
    explanation: &Explanation,
    out: &Path,
) -> anyhow::Result<()> {
    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
        bail!("{}: cannot name outputs after this file", path.display());
    };
    let mut files = Vec::new();
    for (i, cam) in explanation.cams.iter().enumerate() {
        // The first explained label gets the plain names the README promises.
        let base = if i == 0 {
            stem.to_owned()
        } else {
            format!("{stem}.{}", safe(&cam.label))
        };
        let (overlay, npy) = (format!("{base}.overlay.png"), format!("{base}.cam.npy"));
        write_cam(
            image,
            &explanation.map(i),
            &out.join(&overlay),
            &out.join(&npy),
        )?;
        files.push(CamFiles {
            label: cam.label.clone(),
            overlay,
            cam: npy,
        });
    }
    let manifest = &engine.bundle().manifest.model;
    let record = Record {
        image: path.display().to_string(),
        model: &manifest.name,
        model_version: &manifest.version,
        explanation,
        files,
    };
    let json = serde_json::to_vec_pretty(&record)?;
    fs::write(out.join(format!("{stem}.json")), json)
        .with_context(|| format!("cannot write into {}", out.display()))?;
    Ok(())
}

fn write_cam(
    image: &imaging::GrayImage,
    map: &[f32],
    overlay: &Path,
    npy: &Path,
) -> anyhow::Result<()> {
    fs::write(overlay, heatmap::overlay_png(image, map)?)
        .with_context(|| format!("cannot write {}", overlay.display()))?;
    fs::write(npy, heatmap::npy_f32(map, image.width, image.height))
        .with_context(|| format!("cannot write {}", npy.display()))?;
    Ok(())
}

fn safe(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
