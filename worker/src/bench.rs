//! `xcam-worker bench`: forward-only throughput of one bundle beside every CAM method, the
//! out-of-distribution score's cost and each faithfulness setting's, from one run.
//!
//! The loops alternate in short rounds so that a noisy neighbour slows all alike. Every
//! replica the worker would start runs them at once, so the figure is the engine's capacity. The
//! Grad-CAM loop does everything an explanation needs up to the numbers: backbone, head
//! backward, CAM weighting, upsampling to the input size, normalisation, peak and box.

use std::{
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;
use tch::{Device, Kind, Tensor};
use xcam_shared::bundle::Bundle;

use crate::{
    device::{Parallelism, Precision},
    engine::{
        EngineError, Faithfulness, LabelSelection, LoadedModel, Method, Target,
        preprocess::Geometry, summary,
    },
};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    /// What the backbone and head computed in.
    pub precision: String,
    pub batch: usize,
    /// Copies of the model running side by side, as `xcam-worker run` starts them.
    pub replicas: usize,
    /// libtorch intra-op threads per replica.
    pub threads: usize,
    /// The method of the headline figures.
    pub method: String,
    pub forward_images_per_s: f64,
    /// `method` with faithfulness off, as a worker runs it by default.
    pub gradcam_images_per_s: f64,
    pub ratio: f64,
    /// Whether the bundle has a reference, so that every CAM loop also computes the
    /// out-of-distribution score.
    pub ood_score: bool,
    /// Every loop, forward-only first.
    pub loops: Vec<LoopFigure>,
}

#[derive(Debug, Serialize)]
pub struct LoopFigure {
    pub name: String,
    pub images_per_s: f64,
    /// Against forward-only.
    pub ratio: f64,
}

/// What one loop runs on a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loop {
    Forward,
    Explain {
        method: Method,
        faithfulness: Faithfulness,
        ood: bool,
    },
    /// The headline method as a worker runs it, with the input in the other memory layout
    /// than the default: whether channels-last pays is measured, not assumed.
    Layout {
        method: Method,
        channels_last: bool,
    },
}

impl Loop {
    /// Forward only; every method as a worker runs it; the headline method without the
    /// out-of-distribution score; the headline method at each faithfulness setting. Only the
    /// first and the headline method as a worker runs it when `headline_only`.
    fn all(method: Method, has_reference: bool, headline_only: bool) -> Vec<Loop> {
        let explain = |method, faithfulness, ood| Loop::Explain {
            method,
            faithfulness,
            ood,
        };
        if headline_only {
            return vec![
                Loop::Forward,
                explain(method, Faithfulness::Off, has_reference),
            ];
        }
        let mut loops = vec![Loop::Forward];
        loops.extend(Method::ALL.map(|m| explain(m, Faithfulness::Off, has_reference)));
        if has_reference {
            loops.push(explain(method, Faithfulness::Off, false));
        }
        loops.push(explain(method, Faithfulness::Drop, has_reference));
        loops.push(explain(method, Faithfulness::Full, has_reference));
        loops.push(Loop::Layout {
            method,
            channels_last: !LoadedModel::CHANNELS_LAST,
        });
        loops
    }

    fn name(self) -> String {
        match self {
            Loop::Forward => "forward only".into(),
            Loop::Explain {
                method,
                faithfulness,
                ood,
            } => {
                let mut name = method.to_string();
                if faithfulness != Faithfulness::Off {
                    name += &format!(", faithfulness {faithfulness}");
                }
                if !ood {
                    name += ", no OOD score";
                }
                name
            }
            Loop::Layout {
                method,
                channels_last,
            } => {
                let layout = if channels_last {
                    "channels-last"
                } else {
                    "contiguous"
                };
                format!("{method}, input {layout}")
            }
        }
    }
}

/// Runs every loop for about `seconds` on every replica at once; the figures are the replicas'
/// sum, the engine's capacity when every replica is kept busy.
pub fn run(
    bundle: &Bundle,
    (device, precision): (Device, Precision),
    parallelism: Parallelism,
    batch: usize,
    seconds: f64,
    method: Method,
    headline_only: bool,
) -> Result<BenchReport, EngineError> {
    let has_reference = bundle.manifest.reference.is_some();
    let loops = Loop::all(method, has_reference, headline_only);
    let round = Duration::from_secs_f64((seconds / 5.0).clamp(0.2, 2.0));
    let rounds = (seconds / round.as_secs_f64()).ceil() as usize;
    // Every replica runs the same loop at the same time, from when all have loaded.
    let barrier = Barrier::new(parallelism.replicas);
    let per_replica: Vec<Result<Vec<Timed>, EngineError>> = thread::scope(|scope| {
        let replicas: Vec<_> = (0..parallelism.replicas)
            .map(|_| {
                scope.spawn(|| {
                    parallelism.enter(device);
                    let replica = Replica::load(bundle, (device, precision), batch, &loops);
                    // Every thread arrives, loaded or not, so that none waits for ever.
                    barrier.wait();
                    replica?.measure(&loops, round, rounds)
                })
            })
            .collect();
        replicas
            .into_iter()
            .map(|r| r.join().unwrap_or(Err(EngineError::Stopped)))
            .collect()
    });
    let mut images_per_s = vec![0.0; loops.len()];
    for timings in per_replica {
        for (sum, t) in images_per_s.iter_mut().zip(timings?) {
            *sum += t.images_per_s(batch);
        }
    }
    let forward = images_per_s[0];
    let headline = Loop::Explain {
        method,
        faithfulness: Faithfulness::Off,
        ood: has_reference,
    };
    let gradcam = loops
        .iter()
        .position(|l| *l == headline)
        .map_or(0.0, |i| images_per_s[i]);
    Ok(BenchReport {
        model: bundle.name().to_owned(),
        device: crate::device::describe(device),
        precision: precision.to_string(),
        batch,
        replicas: parallelism.replicas,
        threads: parallelism.threads,
        method: method.to_string(),
        forward_images_per_s: forward,
        gradcam_images_per_s: gradcam,
        ratio: gradcam / forward,
        ood_score: has_reference,
        loops: loops
            .iter()
            .zip(&images_per_s)
            .map(|(l, ips)| LoopFigure {
                name: l.name(),
                images_per_s: *ips,
                ratio: ips / forward,
            })
            .collect(),
    })
}

/// One replica's inputs, ready to run any loop.
struct Replica {
    model: LoadedModel,
    /// The same model without its reference, for the loops without the OOD score.
    plain: Option<LoadedModel>,
    /// The same model taking its input in the other memory layout, for [`Loop::Layout`].
    flipped: Option<LoadedModel>,
    x: Tensor,
    geometry: Geometry,
    device: String,
    batch: usize,
}

impl Replica {
    /// Loads the model and warms every loop at this batch size.
    fn load(
        bundle: &Bundle,
        (device, precision): (Device, Precision),
        batch: usize,
        loops: &[Loop],
    ) -> Result<Self, EngineError> {
        let model = LoadedModel::load(bundle.clone(), device, precision)?;
        let plain = if bundle.manifest.reference.is_some() {
            let mut without = bundle.clone();
            without.manifest.reference = None;
            Some(LoadedModel::load(without, device, precision)?)
        } else {
            None
        };
        let flipped = match loops.iter().find(|l| matches!(l, Loop::Layout { .. })) {
            Some(Loop::Layout { channels_last, .. }) => {
                let mut flipped = LoadedModel::load(bundle.clone(), device, precision)?;
                flipped.set_channels_last(*channels_last);
                Some(flipped)
            }
            _ => None,
        };
        let spec = &model.bundle.manifest.input;
        tch::manual_seed(0);
        // Random 16-bit levels, as a worker hands the engine a stored plane's.
        let x = Tensor::randint_low(
            i64::from(i16::MIN),
            i64::from(i16::MAX) + 1,
            [
                batch as i64,
                1,
                i64::from(spec.height),
                i64::from(spec.width),
            ],
            (Kind::Int16, Device::Cpu),
        );
        let geometry = Geometry {
            width: spec.width,
            height: spec.height,
            square: 0,
        };
        let replica = Self {
            x,
            geometry,
            device: crate::device::describe(model.device),
            model,
            plain,
            flipped,
            batch,
        };
        for l in loops {
            replica.run(*l)?;
        }
        Ok(replica)
    }

    /// One batch of a loop. An explanation runs everything it needs up to the numbers:
    /// backbone, head backward, CAM weighting, upsampling to the input size, normalisation,
    /// peak and box, and the extra forwards of its faithfulness setting.
    fn run(&self, l: Loop) -> Result<(), EngineError> {
        let (model, method, faithfulness) = match l {
            Loop::Forward => return self.model.forward_only(&self.x).map(drop),
            Loop::Explain {
                method,
                faithfulness,
                ood,
            } => match (&self.plain, ood) {
                (Some(plain), false) => (plain, method, faithfulness),
                _ => (&self.model, method, faithfulness),
            },
            Loop::Layout { method, .. } => (
                self.flipped.as_ref().unwrap_or(&self.model),
                method,
                Faithfulness::Off,
            ),
        };
        let target = Target {
            method,
            labels: LabelSelection::Top1,
            faithfulness,
        };
        for output in model.explain(&self.x, &vec![target; self.batch])? {
            std::hint::black_box(summary::finish(
                &output,
                &self.geometry,
                &model.bundle,
                &self.device,
            ));
        }
        Ok(())
    }

    /// The loops in turn, in rounds on a clock that starts now.
    fn measure(
        &self,
        loops: &[Loop],
        round: Duration,
        rounds: usize,
    ) -> Result<Vec<Timed>, EngineError> {
        let start = Instant::now();
        let mut timed: Vec<Timed> = loops.iter().map(|_| Timed::default()).collect();
        let mut end = start;
        for _ in 0..rounds {
            for (l, t) in loops.iter().zip(&mut timed) {
                end += round;
                t.run_until(end.max(Instant::now() + round / 4), &|| self.run(*l))?;
            }
        }
        Ok(timed)
    }
}

#[derive(Default)]
struct Timed {
    calls: u64,
    elapsed: Duration,
}

impl Timed {
    fn run_until(
        &mut self,
        deadline: Instant,
        f: &dyn Fn() -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let start = Instant::now();
        while Instant::now() < deadline {
            f()?;
            self.calls += 1;
        }
        self.elapsed += start.elapsed();
        Ok(())
    }

    fn images_per_s(&self, batch: usize) -> f64 {
        self.calls as f64 * batch as f64 / self.elapsed.as_secs_f64()
    }
}
