//! `xcam-worker bench`: forward-only and Grad-CAM throughput of one bundle, from one run.
//!
//! The two loops alternate in short rounds so that a noisy neighbour slows both alike. The
//! Grad-CAM loop does everything an explanation needs up to the numbers: backbone, head
//! backward, CAM weighting, upsampling to the input size, normalisation, peak and box.

use std::time::{Duration, Instant};

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::engine::{
    EngineError, LabelSelection, LoadedModel, Method, Target, preprocess::Geometry, summary,
};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub batch: usize,
    pub threads: i32,
    pub method: String,
    pub forward_images_per_s: f64,
    pub gradcam_images_per_s: f64,
    pub ratio: f64,
}

/// Runs both loops for about `seconds` each.
pub fn run(
    model: &LoadedModel,
    batch: usize,
    seconds: f64,
    method: Method,
) -> Result<BenchReport, EngineError> {
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
    let targets = vec![
        Target {
            method,
            labels: LabelSelection::Top1
        };
        batch
    ];
    let geometry = Geometry {
        width: spec.width,
        height: spec.height,
        square: 0,
    };
    let device = crate::device::describe(model.device);

    let forward = || model.forward_only(&x).map(drop);
    let gradcam = || {
        for output in model.explain(&x, &targets)? {
            std::hint::black_box(summary::finish(&output, &geometry, &model.bundle, &device));
        }
        Ok(())
    };
    // Warm both paths at this batch size before timing.
    for _ in 0..2 {
        forward()?;
        gradcam()?;
    }
    let round = Duration::from_secs_f64((seconds / 5.0).clamp(0.2, 2.0));
    let (mut fwd, mut cam) = (Timed::default(), Timed::default());
    while fwd.elapsed.as_secs_f64() < seconds || cam.elapsed.as_secs_f64() < seconds {
        fwd.run_for(round, &forward)?;
        cam.run_for(round, &gradcam)?;
    }
    let forward_ips = fwd.calls as f64 * batch as f64 / fwd.elapsed.as_secs_f64();
    let gradcam_ips = cam.calls as f64 * batch as f64 / cam.elapsed.as_secs_f64();
    Ok(BenchReport {
        model: model.bundle.name().to_owned(),
        device,
        batch,
        threads: tch::get_num_threads(),
        method: method.to_string(),
        forward_images_per_s: forward_ips,
        gradcam_images_per_s: gradcam_ips,
        ratio: gradcam_ips / forward_ips,
    })
}

#[derive(Default)]
struct Timed {
    calls: u64,
    elapsed: Duration,
}

impl Timed {
    fn run_for(
        &mut self,
        round: Duration,
        f: &dyn Fn() -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let start = Instant::now();
        while start.elapsed() < round {
            f()?;
            self.calls += 1;
        }
        self.elapsed += start.elapsed();
        Ok(())
    }
}
