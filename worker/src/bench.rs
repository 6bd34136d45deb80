//! `xcam-worker bench`: forward-only and Grad-CAM throughput of one bundle, from one run.
//!
//! The two loops alternate in short rounds so that a noisy neighbour slows both alike. Every
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
    device::Parallelism,
    engine::{
        EngineError, LabelSelection, LoadedModel, Method, Target, preprocess::Geometry, summary,
    },
};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub batch: usize,
    /// Copies of the model running side by side, as `xcam-worker run` starts them.
    pub replicas: usize,
    /// libtorch intra-op threads per replica.
    pub threads: usize,
    pub method: String,
    pub forward_images_per_s: f64,
    pub gradcam_images_per_s: f64,
    pub ratio: f64,
}

/// Runs both loops for about `seconds` each on every replica at once; the figures are the
/// replicas' sum, the engine's capacity when every replica is kept busy.
pub fn run(
    bundle: &Bundle,
    device: Device,
    parallelism: Parallelism,
    batch: usize,
    seconds: f64,
    method: Method,
) -> Result<BenchReport, EngineError> {
    let round = Duration::from_secs_f64((seconds / 5.0).clamp(0.2, 2.0));
    let rounds = (seconds / round.as_secs_f64()).ceil() as usize;
    // Every replica runs the same loop at the same time, from when all have loaded.
    let barrier = Barrier::new(parallelism.replicas);
    let per_replica: Vec<Result<(Timed, Timed), EngineError>> = thread::scope(|scope| {
        let replicas: Vec<_> = (0..parallelism.replicas)
            .map(|_| {
                scope.spawn(|| {
                    parallelism.enter(device);
                    let replica = Replica::load(bundle, device, batch, method);
                    // Every thread arrives, loaded or not, so that none waits for ever.
                    barrier.wait();
                    replica?.measure(round, rounds)
                })
            })
            .collect();
        replicas
            .into_iter()
            .map(|r| r.join().unwrap_or(Err(EngineError::Stopped)))
            .collect()
    });
    let (mut forward_ips, mut gradcam_ips) = (0.0, 0.0);
    for timings in per_replica {
        let (fwd, cam) = timings?;
        forward_ips += fwd.images_per_s(batch);
        gradcam_ips += cam.images_per_s(batch);
    }
    Ok(BenchReport {
        model: bundle.name().to_owned(),
        device: crate::device::describe(device),
        batch,
        replicas: parallelism.replicas,
        threads: parallelism.threads,
        method: method.to_string(),
        forward_images_per_s: forward_ips,
        gradcam_images_per_s: gradcam_ips,
        ratio: gradcam_ips / forward_ips,
    })
}

/// One replica's inputs, ready to run either loop.
struct Replica {
    model: LoadedModel,
    x: Tensor,
    targets: Vec<Target>,
    geometry: Geometry,
    device: String,
}

impl Replica {
    /// Loads the model and warms both paths at this batch size.
    fn load(
        bundle: &Bundle,
        device: Device,
        batch: usize,
        method: Method,
    ) -> Result<Self, EngineError> {
        let model = LoadedModel::load(bundle.clone(), device)?;
        let spec = &model.bundle.manifest.input;
        tch::manual_seed(0);
        let x = Tensor::randn(
            [
                batch as i64,
                i64::from(spec.channels),
                i64::from(spec.height),
                i64::from(spec.width),
            ],
            (Kind::Float, Device::Cpu),
        );
        let geometry = Geometry {
            width: spec.width,
            height: spec.height,
            square: 0,
        };
        let replica = Self {
            x,
            targets: vec![
                Target {
                    method,
                    labels: LabelSelection::Top1,
                    ..Target::default()
                };
                batch
            ],
            geometry,
            device: crate::device::describe(model.device),
            model,
        };
        for _ in 0..2 {
            replica.forward()?;
            replica.gradcam()?;
        }
        Ok(replica)
    }

    fn forward(&self) -> Result<(), EngineError> {
        self.model.forward_only(&self.x).map(drop)
    }

    fn gradcam(&self) -> Result<(), EngineError> {
        for output in self.model.explain(&self.x, &self.targets)? {
            std::hint::black_box(summary::finish(
                &output,
                &self.geometry,
                &self.model.bundle,
                &self.device,
            ));
        }
        Ok(())
    }

    /// The two loops alternating in rounds on a clock that starts now.
    fn measure(&self, round: Duration, rounds: usize) -> Result<(Timed, Timed), EngineError> {
        let start = Instant::now();
        let (mut fwd, mut cam) = (Timed::default(), Timed::default());
        for r in 0..rounds as u32 {
            fwd.run_until(start + round * (2 * r + 1), &|| self.forward())?;
            cam.run_until(start + round * (2 * r + 2), &|| self.gradcam())?;
        }
        Ok((fwd, cam))
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
