//! A loaded bundle: the two TorchScript halves on one device, and the two passes the worker
//! runs — forward only, and forward plus one head backward per explained label.

use tch::{CModule, Device, Kind, Tensor};
use xcam_shared::{bundle::Bundle, heatmap::Grid};

use super::{
    EngineError, Precision,
    cam::{self, Faithfulness, LabelSelection, Method},
    faithfulness::{self, FaithfulnessScores, MapToScore},
    preprocess::Normaliser,
    reference::Reference,
};

/// One image's share of a batch: what to explain and how.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub method: Method,
    pub labels: LabelSelection,
    pub faithfulness: Faithfulness,
}

/// The map of one explained label, still at the target layer's resolution.
#[derive(Debug)]
pub struct RawCam {
    pub label: usize,
    pub method: Method,
    pub grid: Grid,
    pub raw_max: f32,
    pub faithfulness: Option<FaithfulnessScores>,
}

/// What the model says about one image.
#[derive(Debug)]
pub struct RawOutput {
    pub probabilities: Vec<f32>,
    pub cams: Vec<RawCam>,
    /// Distance of the image's features from the bundle's reference; `None` without one.
    pub ood_score: Option<f32>,
}

pub struct LoadedModel {
    pub bundle: Bundle,
    pub device: Device,
    /// What the backbone and head compute in.
    pub precision: Precision,
    features: CModule,
    head: CModule,
    reference: Option<Reference>,
    normaliser: Normaliser,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("bundle", &self.bundle.dir)
            .field("device", &self.device)
            .field("precision", &self.precision)
            .field("channels_last", &self.channels_last())
            .finish()
    }
}

impl LoadedModel {
    /// Loads both halves onto `device` and warms them up: TorchScript's profiling executor makes
    /// the first calls several times slower, and a wrong-shaped bundle should fail here, not on
    /// the first job.
    pub fn load(bundle: Bundle, device: Device, precision: Precision) -> Result<Self, EngineError> {
        let load = |path: std::path::PathBuf| {
            let mut m = CModule::load_on_device(&path, device).map_err(|e| EngineError::Model {
                bundle: bundle.dir.display().to_string(),
                reason: format!("cannot load {}: {e}", path.display()),
            })?;
            m.set_eval();
            if precision != Precision::Fp32 {
                m.to(device, precision.kind(), false);
            }
            Ok::<_, EngineError>(m)
        };
        let model = Self {
            features: load(bundle.features_path())?,
            head: load(bundle.head_path())?,
            reference: Reference::load(&bundle, device)?,
            normaliser: Normaliser::new(&bundle.manifest.input, device, Self::CHANNELS_LAST),
            device,
            precision,
            bundle,
        };
        let spec = &model.bundle.manifest.input;
        let dummy = Tensor::zeros(
            [2, 1, i64::from(spec.height), i64::from(spec.width)],
            (Kind::Int16, Device::Cpu),
        );
        for _ in 0..3 {
            let probabilities = model.forward_only(&dummy)?;
            let labels = model.bundle.labels().len();
            if probabilities.size() != [2, labels as i64] {
                return Err(EngineError::Model {
                    bundle: model.bundle.dir.display().to_string(),
                    reason: format!(
                        "the head outputs {:?} for a batch of 2, but model.toml lists {labels} labels",
                        probabilities.size()
                    ),
                });
            }
            model.explain(&dummy, &[Target::default(), Target::default()])?;
        }
        Ok(model)
    }

    fn model_error(&self, e: tch::TchError) -> EngineError {
        EngineError::Inference(format!("{}: {e}", self.bundle.name()))
    }

    /// Whether a model takes its input channels-last unless told, on every device. On the CPU
    /// `xcam-worker bench` measured DenseNet-121 11 % faster with it (24.7 → 27.4 images/s,
    /// batch 8, 2 cores) and the demo bundle the same within noise; on a GPU,
    /// reduced-precision convolutions run on tensor cores in NHWC. The bench's "input
    /// contiguous" loop measures the other layout on each machine.
    pub const CHANNELS_LAST: bool = true;

    /// Whether the input goes to the backbone channels-last (NHWC strides).
    pub fn channels_last(&self) -> bool {
        self.normaliser.channels_last()
    }

    /// Sends the input channels-last or not, whatever the device (`xcam-worker bench` measures
    /// both).
    pub fn set_channels_last(&mut self, on: bool) {
        self.normaliser = Normaliser::new(&self.bundle.manifest.input, self.device, on);
    }

    /// The model's input for a batch of levels (N×1×H×W, see [`super::preprocess`]): on the
    /// device, normalised, fp32.
    pub fn inputs(&self, levels: &Tensor) -> Tensor {
        self.normaliser.apply(levels)
    }

    /// Probabilities (sigmoid of the logits: labels are independent findings) for a batch of
    /// levels.
    pub fn forward_only(&self, levels: &Tensor) -> Result<Tensor, EngineError> {
        self.probabilities(&self.inputs(levels))
    }

    /// Probabilities for a batch of model inputs (normalised, as [`Self::inputs`] makes them).
    pub(super) fn probabilities(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        tch::no_grad(|| {
            let a = self
                .features
                .forward_ts(&[self.model_input(x)])
                .map_err(|e| self.model_error(e))?;
            let logits = self
                .head
                .forward_ts(&[a])
                .map_err(|e| self.model_error(e))?;
            Ok(logits.to_kind(Kind::Float).sigmoid().to_device(Device::Cpu))
        })
    }

    /// `x` on the model's device, in its precision.
    fn model_input(&self, x: &Tensor) -> Tensor {
        x.to_device(self.device).to_kind(self.precision.kind())
    }

    /// Probabilities and CAMs for a batch of levels (N×1×H×W on the CPU, see
    /// [`super::preprocess`]) with one target per image.
    ///
    /// The backbone runs once without autograd; the head is differentiated with respect to its
    /// input A once per explained-label *slot*: slot s sums, over the images, the logit of each
    /// image's s-th explained label. Images do not interact in eval mode, so that one backward
    /// gives every image its own gradient.
    pub fn explain(
        &self,
        levels: &Tensor,
        targets: &[Target],
    ) -> Result<Vec<RawOutput>, EngineError> {
        let n = targets.len();
        let x = self.inputs(levels);
        let activations = tch::no_grad(|| self.features.forward_ts(&[self.model_input(&x)]))
            .map_err(|e| self.model_error(e))?;
        let ood = match &self.reference {
            Some(reference) => Some(tch::no_grad(|| {
                reference.scores(&activations.to_kind(Kind::Float))
            })?),
            None => None,
        };
        let a = activations.detach().set_requires_grad(true);
        let logits = self
            .head
            .forward_ts(&[&a])
            .map_err(|e| self.model_error(e))?;
        let probs = logits
            .detach()
            .to_kind(Kind::Float)
            .sigmoid()
            .to_device(Device::Cpu);
        let num_labels = logits.size()[1];
        let manifest = &self.bundle.manifest.model;

        let mut outputs: Vec<RawOutput> = (0..n)
            .map(|i| {
                let probabilities = Vec::<f32>::try_from(probs.get(i as i64)).unwrap_or_default();
                RawOutput {
                    probabilities,
                    cams: Vec::new(),
                    ood_score: ood.as_ref().map(|o| o[i]),
                }
            })
            .collect();
        let picks: Vec<Vec<usize>> = outputs
            .iter()
            .zip(targets)
            .map(|(o, t)| {
                t.labels
                    .pick(&o.probabilities, &manifest.thresholds, &manifest.labels)
            })
            .collect();
        let slots = picks.iter().map(Vec::len).max().unwrap_or(0);
        let a_cpu = a.detach().to_device(Device::Cpu).to_kind(Kind::Float);
        // Gradient-free methods (EigenCAM) skip the backward of a slot no other image needs.
        let wants_gradient = |slot: usize| {
            picks
                .iter()
                .zip(targets)
                .any(|(p, t)| p.len() > slot && t.method.needs_gradient())
        };

        // (image, cam) of every map whose faithfulness was asked for, and the map.
        let mut to_score: Vec<(usize, usize, Tensor)> = Vec::new();
        for slot in 0..slots {
            let mut mask = vec![0f32; n * num_labels as usize];
            for (i, p) in picks.iter().enumerate() {
                if let Some(&label) = p.get(slot) {
                    mask[i * num_labels as usize + label] = 1.0;
                }
            }
            let mask = Tensor::from_slice(&mask)
                .view([n as i64, num_labels])
                .to_device(self.device)
                .to_kind(logits.kind());
            let g = if wants_gradient(slot) {
                let score = (&logits * mask).sum(Kind::Float);
                let keep_graph = (slot + 1..slots).any(wants_gradient);
                let grads = Tensor::f_run_backward(&[score], &[&a], keep_graph, false)
                    .map_err(|e| self.model_error(e))?;
                Some(grads[0].to_device(Device::Cpu).to_kind(Kind::Float))
            } else {
                None
            };
            for (i, p) in picks.iter().enumerate() {
                let Some(&label) = p.get(slot) else { continue };
                let method = targets[i].method;
                let g_i = g.as_ref().map(|g| g.get(i as i64));
                let map = cam::cam(method, &a_cpu.get(i as i64), g_i.as_ref());
                let (h, w) = (map.size()[0] as usize, map.size()[1] as usize);
                if targets[i].faithfulness != Faithfulness::Off {
                    to_score.push((i, outputs[i].cams.len(), map.shallow_clone()));
                }
                let map =
                    Vec::<f32>::try_from(map.flatten(0, -1)).map_err(|e| self.model_error(e))?;
                let raw_max = map.iter().copied().fold(0.0, f32::max);
                outputs[i].cams.push(RawCam {
                    label,
                    method,
                    grid: Grid { h, w, values: map },
                    raw_max,
                    faithfulness: None,
                });
            }
        }
        for setting in [Faithfulness::Drop, Faithfulness::Full] {
            let chosen: Vec<&(usize, usize, Tensor)> = to_score
                .iter()
                .filter(|(i, _, _)| targets[*i].faithfulness == setting)
                .collect();
            let maps: Vec<MapToScore<'_>> = chosen
                .iter()
                .map(|(i, c, map)| {
                    let label = outputs[*i].cams[*c].label;
                    MapToScore {
                        input: x.get(*i as i64),
                        label,
                        map,
                        probability: outputs[*i].probabilities[label],
                    }
                })
                .collect();
            let scores = faithfulness::score(self, &maps, setting == Faithfulness::Full)?;
            for ((i, c, _), score) in chosen.into_iter().zip(scores) {
                outputs[*i].cams[*c].faithfulness = Some(score);
            }
        }
        Ok(outputs)
    }
}
