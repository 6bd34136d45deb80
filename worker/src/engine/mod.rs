//! The Grad-CAM engine: a model on a device, each replica owned by its own inference thread, all
//! fed through one channel. Requests that arrive close together are run as one batch (up to
//! `max_batch` images, waiting at most `max_wait` for the batch to fill), so callers get dynamic
//! batching for free; one replica gathers at a time, so batches fill before the next begins.
//!
//! Inference and autograd never run on the async executor: callers `await` a oneshot reply.
//! Pre- and post-processing (resizing, upsampling to the original size, summaries, overlays)
//! run on the caller's (blocking) thread, so they overlap with the model's work.

pub mod cam;
pub mod faithfulness;
pub mod model;
pub mod preprocess;
pub mod reference;
pub mod summary;

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use tch::Tensor;
use tokio::sync::oneshot;
use xcam_shared::{
    bundle::Bundle,
    heatmap::Geometry,
    imaging::{GrayImage, fitted::Stored},
};

pub use cam::{Faithfulness, LabelSelection, Method};
pub use model::{LoadedModel, Target};
pub use summary::Explanation;

pub use crate::device::Precision;
use crate::device::{DeviceSpec, Parallelism, describe, describe_all};

/// What can go wrong in the engine. `is_permanent()` says whether retrying could help.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("model bundle {bundle}: {reason}")]
    Model { bundle: String, reason: String },
    #[error("{0}")]
    Device(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the inference thread has stopped")]
    Stopped,
}

impl EngineError {
    /// A bad request stays bad; an inference failure (e.g. out of GPU memory) or a stopped
    /// engine may not recur on another attempt or another worker.
    pub fn is_permanent(&self) -> bool {
        matches!(self, EngineError::BadRequest(_) | EngineError::Model { .. })
    }

    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Model { .. } => "model_error",
            EngineError::Device(_) => "device_error",
            EngineError::BadRequest(_) => "bad_request",
            EngineError::Inference(_) => "inference_failed",
            EngineError::Stopped => "engine_stopped",
        }
    }
}

/// Batching and replica knobs.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Copies of the model on the device; `None` picks per device ([`Parallelism::resolve`]).
    pub replicas: Option<usize>,
    /// What the model computes in; `None` picks per device ([`Precision::resolve`]).
    pub precision: Option<Precision>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_wait: Duration::from_millis(20),
            replicas: None,
            precision: None,
        }
    }
}

/// One image's reply from the inference thread.
#[derive(Debug)]
pub struct Inferred {
    pub output: model::RawOutput,
    /// How many images ran in the same batch.
    pub batch_size: usize,
    /// Wall time of that batch on the inference thread.
    pub batch_ms: f64,
    /// The device it ran on (`cpu`, `cuda:1`): one engine may drive several.
    pub device: Arc<str>,
}

struct Request {
    input: Tensor,
    target: Target,
    reply: oneshot::Sender<Result<Inferred, EngineError>>,
}

/// A handle on the inference thread; cheap to clone. The thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Request>,
    bundle: Bundle,
    devices: Vec<tch::Device>,
    device: String,
    precision: Precision,
    parallelism: Parallelism,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.bundle.name())
            .field("device", &self.device)
            .field("precision", &self.precision)
            .field("parallelism", &self.parallelism)
            .finish()
    }
}

impl Engine {
    /// Loads the bundle on the device once per replica (each on its own thread, which then owns
    /// it) and returns once every replica is warm.
    pub fn start(
        bundle: Bundle,
        devices: &DeviceSpec,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        let devices = devices.resolve().map_err(EngineError::Device)?;
        // Every device is of one kind (the CPU, or GPUs): the first speaks for all.
        let parallelism = Parallelism::resolve(options.replicas, devices[0]);
        let precision = Precision::resolve(options.precision, devices[0]);
        let replicas = parallelism.replicas * devices.len();
        let (tx, rx) = mpsc::channel::<Request>();
        let shared = Arc::new(Shared {
            rx: Mutex::new(rx),
            figures: Mutex::new(Figures::new()),
            options,
            replicas,
            serving: AtomicUsize::new(replicas),
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        // Each replica gathers its own batches from the one queue: a faster device takes more.
        let placements = devices
            .iter()
            .flat_map(|&device| (0..parallelism.replicas).map(move |r| (device, r)));
        for (device, replica) in placements {
            let (bundle, shared, ready) = (bundle.clone(), shared.clone(), ready_tx.clone());
            thread::Builder::new()
                .name(format!(
                    "infer-{}-{}-{replica}",
                    bundle.name(),
                    describe(device)
                ))
                .spawn(move || {
                    parallelism.enter(device);
                    match LoadedModel::load(bundle, device, precision) {
                        Ok(model) => {
                            let _ = ready.send(Ok(()));
                            serve(&model, &shared);
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .map_err(|e| {
                    EngineError::Device(format!("cannot start an inference thread: {e}"))
                })?;
        }
        drop(ready_tx);
        for _ in 0..replicas {
            ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        }
        let device = describe_all(&devices);
        tracing::info!(
            model = bundle.name(),
            %device,
            %precision,
            replicas_per_device = parallelism.replicas,
            threads_per_replica = parallelism.threads,
            "engine ready"
        );
        Ok(Self {
            tx,
            bundle,
            devices,
            device,
            precision,
            parallelism,
        })
    }

    /// What the model computes in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Replicas and threads per replica.
    pub fn parallelism(&self) -> Parallelism {
        self.parallelism
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The devices actually used (`cpu`, `cuda:0,cuda:1`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The devices its replicas run on.
    pub fn devices(&self) -> &[tch::Device] {
        &self.devices
    }

    /// Validates a target against this model.
    pub fn check_target(&self, target: &Target) -> Result<(), EngineError> {
        target
            .labels
            .validate(self.bundle.labels())
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// Queues one prepared image (its levels, see [`preprocess`]); the reply comes when its
    /// batch has run.
    pub fn submit(
        &self,
        input: Tensor,
        target: Target,
    ) -> Result<oneshot::Receiver<Result<Inferred, EngineError>>, EngineError> {
        self.check_target(&target)?;
        let spec = &self.bundle.manifest.input;
        let want = [1, i64::from(spec.height), i64::from(spec.width)];
        if input.size() != want || input.kind() != tch::Kind::Int16 {
            return Err(EngineError::BadRequest(format!(
                "input has shape {:?} of {:?}, the model takes 16-bit levels of shape {want:?}",
                input.size(),
                input.kind()
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                input,
                target,
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }

    /// Prepares one decoded image for the model (resize, letterbox: CPU work, on the caller's
    /// thread) and queues it.
    pub fn enqueue(&self, image: &GrayImage, target: Target) -> Result<Pending, EngineError> {
        self.enqueue_prepared(
            preprocess::prepare(image, &self.bundle.manifest.input),
            target,
        )
    }

    /// Queues an image fitted to this model's input at ingestion, as stored: a copy of its
    /// levels, cheap enough for any thread.
    pub fn enqueue_stored(
        &self,
        stored: &Stored<'_>,
        target: Target,
    ) -> Result<Pending, EngineError> {
        self.enqueue_prepared(preprocess::prepare_stored(stored), target)
    }

    fn enqueue_prepared(
        &self,
        prepared: preprocess::Prepared,
        target: Target,
    ) -> Result<Pending, EngineError> {
        let reply = self.submit(prepared.input, target)?;
        Ok(Pending {
            reply,
            geometry: prepared.geometry,
            engine: self.clone(),
        })
    }

    /// Prepares, runs and summarises one image. For callers on a blocking thread.
    pub fn explain_blocking(
        &self,
        image: &GrayImage,
        target: Target,
    ) -> Result<(Explanation, Inferred), EngineError> {
        Ok(self.enqueue(image, target)?.wait()?.finish())
    }
}

/// An image queued on the engine, waiting for its batch to run.
pub struct Pending {
    reply: oneshot::Receiver<Result<Inferred, EngineError>>,
    geometry: Geometry,
    engine: Engine,
}

impl Pending {
    /// Waits for the batch without blocking the executor.
    pub async fn ran(self) -> Result<Ran, EngineError> {
        let inferred = self.reply.await.map_err(|_| EngineError::Stopped)??;
        Ok(Ran {
            inferred,
            geometry: self.geometry,
            engine: self.engine,
        })
    }

    /// Waits for the batch, blocking this thread.
    pub fn wait(self) -> Result<Ran, EngineError> {
        let inferred = self
            .reply
            .blocking_recv()
            .map_err(|_| EngineError::Stopped)??;
        Ok(Ran {
            inferred,
            geometry: self.geometry,
            engine: self.engine,
        })
    }
}

/// An image whose batch has run: its raw maps, not yet upsampled or summarised.
pub struct Ran {
    pub inferred: Inferred,
    pub geometry: Geometry,
    engine: Engine,
}

impl Ran {
    /// Upsamples and summarises the maps over the original image (CPU work: a blocking thread).
    pub fn finish(self) -> (Explanation, Inferred) {
        let explanation = summary::finish(
            &self.inferred.output,
            &self.geometry,
            &self.engine.bundle,
            &self.engine.device,
        );
        (explanation, self.inferred)
    }
}

/// How often the engine logs its batching figures.
const FIGURES_EVERY: Duration = Duration::from_secs(10);

/// What the replicas of one engine share.
struct Shared {
    /// Taken by one replica at a time, for as long as it gathers a batch.
    rx: Mutex<mpsc::Receiver<Request>>,
    figures: Mutex<Figures>,
    options: EngineOptions,
    replicas: usize,
    /// Replicas not retired for a failing device.
    serving: AtomicUsize,
}

/// Batching figures since they were last logged, over all replicas.
struct Figures {
    batches: u64,
    images: u64,
    busy: Duration,
    since: Instant,
}

impl Figures {
    fn new() -> Self {
        Self {
            batches: 0,
            images: 0,
            busy: Duration::ZERO,
            since: Instant::now(),
        }
    }
}

/// Batches in a row a GPU replica may fail before it stops taking work.
const RETIRE_AFTER: u32 = 3;

/// Whether a replica has failed long enough to stop taking work.
///
/// Only a GPU retires: a lost or exhausted device keeps failing, and its batches are better run
/// by the others. A CPU failure says nothing about the CPU, so that replica goes on. The last
/// replica serving never retires, so a worker always answers its jobs (with errors, which send
/// them back to the queue) rather than leaving them waiting for a replica that will never come.
struct Retirement<'a> {
    gpu: bool,
    failures: u32,
    /// Replicas of the engine not retired, shared by all of them.
    serving: &'a AtomicUsize,
}

impl<'a> Retirement<'a> {
    fn new(gpu: bool, serving: &'a AtomicUsize) -> Self {
        Self {
            gpu,
            failures: 0,
            serving,
        }
    }

    /// Counts a batch; true when this replica is to stop (its place is then given up).
    fn after_batch(&mut self, ok: bool) -> bool {
        if ok {
            self.failures = 0;
            return false;
        }
        self.failures += 1;
        self.gpu
            && self.failures >= RETIRE_AFTER
            && self
                .serving
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n > 1).then(|| n - 1)
                })
                .is_ok()
    }
}

/// A replica's loop: gather a batch, run it, reply, until every sender is gone.
///
/// A batch that fails is answered with the error (a transient one: its jobs go back to the
/// queue) and counted in `xcam_worker_device_errors_total`. A GPU that fails [`RETIRE_AFTER`]
/// batches in a row (lost, out of memory for good) is retired ([`Retirement`]): its replica
/// stops taking work and the others go on, unless it is the last.
fn serve(model: &LoadedModel, shared: &Shared) {
    let options = shared.options;
    let device: Arc<str> = describe(model.device).into();
    let mut retirement = Retirement::new(model.device.is_cuda(), &shared.serving);
    while let Some(batch) = gather(shared) {
        let size = batch.len() as u64;
        let (busy, ok) = run_batch(model, batch, &device);
        if !ok {
            metrics::counter!("xcam_worker_device_errors_total", "device" => device.to_string())
                .increment(1);
        }
        if retirement.after_batch(ok) {
            tracing::error!(
                model = model.bundle.name(),
                %device,
                failures = retirement.failures,
                "this device failed every batch of its last few; its replica stops taking work"
            );
            metrics::gauge!("xcam_worker_device_retired", "device" => device.to_string()).set(1.0);
            return;
        }
        let mut f = shared
            .figures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (f.batches, f.images, f.busy) = (f.batches + 1, f.images + size, f.busy + busy);
        let elapsed = f.since.elapsed();
        if elapsed >= FIGURES_EVERY {
            tracing::info!(
                model = model.bundle.name(),
                batches = f.batches,
                images = f.images,
                mean_batch = f.images as f64 / f.batches as f64,
                max_batch = options.max_batch,
                max_wait_ms = options.max_wait.as_millis() as u64,
                replicas = shared.replicas,
                busy_pct =
                    100.0 * f.busy.as_secs_f64() / elapsed.as_secs_f64() / shared.replicas as f64,
                "dynamic batching"
            );
            *f = Figures::new();
        }
    }
}

/// Waits for a first request, then takes more until the batch is full or `max_wait` has
/// passed; `None` once every sender is gone. Requests nobody awaits any more (their job timed
/// out) are dropped, not run.
fn gather(shared: &Shared) -> Option<Vec<Request>> {
    let options = shared.options;
    let rx = shared.rx.lock().unwrap_or_else(PoisonError::into_inner);
    let awaited = |r: &Request| !r.reply.is_closed();
    loop {
        let mut batch = vec![rx.recv().ok()?];
        let deadline = Instant::now() + options.max_wait;
        while batch.len() < options.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
            if batch.len() == options.max_batch {
                batch.retain(awaited);
            }
        }
        batch.retain(awaited);
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

/// Runs one batch and replies to each request; returns the time the batch took and whether it
/// ran.
fn run_batch(model: &LoadedModel, batch: Vec<Request>, device: &Arc<str>) -> (Duration, bool) {
    let started = Instant::now();
    let size = batch.len();
    let (inputs, rest): (Vec<Tensor>, Vec<(Target, oneshot::Sender<_>)>) = batch
        .into_iter()
        .map(|r| (r.input, (r.target, r.reply)))
        .unzip();
    let targets: Vec<Target> = rest.iter().map(|(t, _)| t.clone()).collect();
    // A libtorch error surfaces as a Rust panic in some tch calls; it must fail this batch,
    // not kill the thread every later job depends on.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        model.explain(&Tensor::stack(&inputs, 0), &targets)
    }))
    .unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "libtorch panicked".into());
        Err(EngineError::Inference(reason))
    });
    let elapsed = started.elapsed();
    let batch_ms = elapsed.as_secs_f64() * 1e3;
    tracing::debug!(
        model = model.bundle.name(),
        batch = size,
        ms = batch_ms,
        "ran batch"
    );
    match result {
        Ok(outputs) => {
            for (output, (_, reply)) in outputs.into_iter().zip(rest) {
                let _ = reply.send(Ok(Inferred {
                    output,
                    batch_size: size,
                    batch_ms,
                    device: device.clone(),
                }));
            }
            (elapsed, true)
        }
        Err(e) => {
            tracing::warn!(model = model.bundle.name(), %device, batch = size, error = %e, "a batch failed");
            for (_, reply) in rest {
                let _ = reply.send(Err(e.clone()));
            }
            (elapsed, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{RETIRE_AFTER, Retirement};

    #[test]
    fn a_gpu_retires_after_failing_batches_in_a_row_while_another_replica_serves() {
        let serving = AtomicUsize::new(2);
        let mut gpu = Retirement::new(true, &serving);
        for _ in 1..RETIRE_AFTER {
            assert!(!gpu.after_batch(false));
        }
        assert!(gpu.after_batch(false));
        assert_eq!(serving.load(Ordering::SeqCst), 1, "its place is given up");
    }

    #[test]
    fn a_batch_that_runs_forgives_the_failures_before_it() {
        let serving = AtomicUsize::new(2);
        let mut gpu = Retirement::new(true, &serving);
        for _ in 0..3 {
            for _ in 1..RETIRE_AFTER {
                assert!(!gpu.after_batch(false));
            }
            assert!(!gpu.after_batch(true));
        }
        assert_eq!(serving.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_last_replica_serving_never_retires() {
        let serving = AtomicUsize::new(2);
        let (mut first, mut second) = (
            Retirement::new(true, &serving),
            Retirement::new(true, &serving),
        );
        let mut retired = 0;
        for _ in 0..10 {
            retired +=
                usize::from(first.after_batch(false)) + usize::from(second.after_batch(false));
        }
        assert_eq!(
            retired, 1,
            "one of the two retires; the other is then the last"
        );
        assert_eq!(serving.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cpu_replica_never_retires() {
        let serving = AtomicUsize::new(2);
        let mut cpu = Retirement::new(false, &serving);
        assert!((0..10).all(|_| !cpu.after_batch(false)));
        assert_eq!(serving.load(Ordering::SeqCst), 2);
    }
}
