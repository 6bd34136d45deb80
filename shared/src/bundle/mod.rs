//! Model bundles: a directory holding `model.toml` and the two TorchScript halves of a
//! classifier split at its Grad-CAM target layer (`features.pt`: image → activations,
//! `head.pt`: activations → logits).
//!
//! Loading a bundle checks the manifest and the SHA-256 of every file it lists, so a worker never
//! runs a model other than the one the manifest (and the results it signs) describes.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub mod remote;

use crate::blob::sha256_hex;

pub const MANIFEST_FILE: &str = "model.toml";
pub const FEATURES_FILE: &str = "features.pt";
pub const HEAD_FILE: &str = "head.pt";

/// Why a bundle cannot be used. Every message names the bundle directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("model bundle {dir}: cannot read {file}: {source}")]
    Io {
        dir: PathBuf,
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model bundle {dir}: model.toml is invalid: {reason}")]
    Manifest { dir: PathBuf, reason: String },
    #[error("model bundle {dir}: {file} has sha256 {actual}, but model.toml says {expected}")]
    Checksum {
        dir: PathBuf,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("no model bundle named {name:?} in {dir} (available: {available})")]
    Unknown {
        name: String,
        dir: PathBuf,
        available: String,
    },
}

/// `model.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: ModelInfo,
    pub input: InputSpec,
    pub target_layer: TargetLayer,
    /// What the training inputs looked like, for the out-of-distribution score; without it the
    /// score is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceSpec>,
    /// SHA-256 of every file of the bundle, by file name.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// Output labels, in the order of the logits.
    pub labels: Vec<String>,
    /// Per-label probability above which a label counts as positive (`labels = "positive"`).
    pub thresholds: Vec<f32>,
    /// How the weights came to be.
    pub provenance: String,
    pub licence: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub height: u32,
    pub width: u32,
    /// 1 for grayscale models, 3 for models trained on RGB (the gray plane is repeated).
    pub channels: u32,
    pub resize: ResizePolicy,
    pub normalize: Normalization,
}

/// How an image of any shape becomes the model's input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizePolicy {
    /// Resize both axes independently (aspect ratio not kept).
    Stretch,
    /// Pad the short side (with the image's minimum) to a square, then resize.
    Letterbox,
}

/// Intensity normalisation, applied to pixel values scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalization {
    /// `(x - mean[c]) / std[c]` per channel (ImageNet style).
    MeanStd { mean: Vec<f32>, std: Vec<f32> },
    /// Linear map of [0, 1] onto [low, high] (torchxrayvision uses [-1024, 1024]).
    Range { low: f32, high: f32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLayer {
    /// The layer the bundle was split at, for the record (e.g. `features.norm5`).
    pub name: String,
}

/// `[reference]`: the mean and covariance of the pooled target-layer features of in-distribution
/// images, and the score above which an image counts as out of distribution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    /// An `.npz` in the bundle holding `mean` (K) and `precision` (K×K, the inverse of the
    /// shrunk covariance).
    pub file: String,
    /// Mahalanobis distance above which an image is flagged.
    pub threshold: f32,
    /// How the threshold was set (which held-out images, which percentile).
    pub calibration: String,
}

/// A verified bundle on disk.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Bundle {
    /// Reads `dir/model.toml`, validates it and checks every listed file's SHA-256.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&manifest_path).map_err(|source| BundleError::Io {
            dir: dir.to_owned(),
            file: MANIFEST_FILE.into(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| BundleError::Manifest {
            dir: dir.to_owned(),
            reason: e.to_string(),
        })?;
        manifest
            .validate()
            .map_err(|reason| BundleError::Manifest {
                dir: dir.to_owned(),
                reason,
            })?;
        for (file, expected) in &manifest.files {
            let bytes = fs::read(dir.join(file)).map_err(|source| BundleError::Io {
                dir: dir.to_owned(),
                file: file.clone(),
                source,
            })?;
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(BundleError::Checksum {
                    dir: dir.to_owned(),
                    file: file.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.model.name
    }

    pub fn labels(&self) -> &[String] {
        &self.manifest.model.labels
    }

    pub fn features_path(&self) -> PathBuf {
        self.dir.join(FEATURES_FILE)
    }

    pub fn head_path(&self) -> PathBuf {
        self.dir.join(HEAD_FILE)
    }
}

impl Manifest {
    fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(format!(
                "model.name {:?} must be non-empty ASCII letters, digits, '-' or '_'",
                m.name
            ));
        }
        if m.labels.is_empty() {
            return Err("model.labels is empty".into());
        }
        if m.thresholds.len() != m.labels.len() {
            return Err(format!(
                "model.thresholds has {} values for {} labels",
                m.thresholds.len(),
                m.labels.len()
            ));
        }
        let i = &self.input;
        if !(i.channels == 1 || i.channels == 3) {
            return Err(format!(
                "input.channels is {}; 1 or 3 are supported",
                i.channels
            ));
        }
        if i.height < 8 || i.width < 8 {
            return Err("input.height and input.width must be at least 8".into());
        }
        if let Normalization::MeanStd { mean, std } = &i.normalize {
            if mean.len() != i.channels as usize || std.len() != i.channels as usize {
                return Err("input.normalize mean and std need one value per channel".into());
            }
            if std.iter().any(|s| *s <= 0.0) {
                return Err("input.normalize std values must be positive".into());
            }
        }
        if let Some(r) = &self.reference {
            if !self.files.contains_key(&r.file) {
                return Err(format!("files has no sha256 for the reference {}", r.file));
            }
            if !(r.threshold.is_finite() && r.threshold > 0.0) {
                return Err("reference.threshold must be a positive number".into());
            }
        }
        for required in [FEATURES_FILE, HEAD_FILE] {
            if !self.files.contains_key(required) {
                return Err(format!("files has no sha256 for {required}"));
            }
        }
        Ok(())
    }
}

/// Every bundle under `dir` (one level deep), by name. A directory without `model.toml` is
/// ignored; a broken bundle is an error, not silently skipped.
pub fn discover(dir: &Path) -> Result<BTreeMap<String, Bundle>, BundleError> {
    let entries = fs::read_dir(dir).map_err(|source| BundleError::Io {
        dir: dir.to_owned(),
        file: ".".into(),
        source,
    })?;
    let mut found = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for path in dirs {
        if path.join(MANIFEST_FILE).is_file() {
            let bundle = Bundle::load(&path)?;
            found.insert(bundle.name().to_owned(), bundle);
        }
    }
    Ok(found)
}

/// A bundle given either as a directory or as a name under `models_dir`.
pub fn resolve(spec: &str, models_dir: &Path) -> Result<Bundle, BundleError> {
    let as_path = Path::new(spec);
    if as_path.join(MANIFEST_FILE).is_file() {
        return Bundle::load(as_path);
    }
    let mut all = discover(models_dir)?;
    all.remove(spec).ok_or_else(|| BundleError::Unknown {
        name: spec.to_owned(),
        dir: models_dir.to_owned(),
        available: all.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}
