//! The `xcam-worker` command line: one typed config, parsed once.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use xcam_shared::{bundle, config::TelemetryArgs};

use crate::{
    bench,
    config::{ModelArgs, RunArgs},
    device::{Parallelism, Precision},
    engine::{Engine, EngineOptions, Faithfulness, LabelSelection, Method, Target},
    explain,
};

#[derive(Debug, Parser)]
#[command(
    name = "xcam-worker",
    version,
    about = "Run chest X-ray classifiers with libtorch and explain them with Grad-CAM."
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Explain images from files: writes STEM.overlay.png, STEM.cam.npy and STEM.json for each.
    Explain(ExplainArgs),
    /// Measure forward-only and Grad-CAM throughput of a bundle, side by side.
    Bench(BenchArgs),
    /// Consume the batch pipeline's jobs from Redis until SIGINT/SIGTERM.
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A bundle directory, or a bundle name under --models-dir.
    #[arg(long)]
    pub model: String,
    /// An image to explain (PNG, JPEG or TIFF); repeat for more.
    #[arg(long = "image", required = true)]
    pub images: Vec<PathBuf>,
    /// gradcam, gradcam++, hirescam, xgradcam, layercam or eigencam.
    #[arg(long, default_value = "gradcam")]
    pub method: Method,
    /// top1, positive, all, or label names separated by commas.
    #[arg(long, default_value = "top1")]
    pub labels: LabelSelection,
    /// off, drop (confidence drop and increase: one more forward per map) or full (also
    /// deletion and insertion AUC: 43 more in all).
    #[arg(long, default_value = "off")]
    pub faithfulness: Faithfulness,
    /// Where to write the outputs.
    #[arg(long)]
    pub out: PathBuf,
    /// Largest number of images run together.
    #[arg(long = "max-batch", default_value_t = 8)]
    pub max_batch: usize,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A bundle directory, or a bundle name under --models-dir.
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Seconds per loop (forward-only and Grad-CAM each).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, default_value = "gradcam")]
    pub method: Method,
    /// Only forward and --method as a worker runs it by default (what the pipeline benchmark
    /// compares with), not every method and faithfulness setting.
    #[arg(long)]
    pub headline: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Explain(args) => {
            let bundle = bundle::resolve(&args.model, &args.model_args.models_dir)?;
            let options = EngineOptions {
                max_batch: args.max_batch.max(1),
                replicas: args.model_args.replicas(),
                precision: args.model_args.precision,
                ..EngineOptions::default()
            };
            let engine = Engine::start(bundle, &args.model_args.device, options)?;
            let target = Target {
                method: args.method,
                labels: args.labels,
                faithfulness: args.faithfulness,
            };
            let results = explain::run(&engine, &args.images, &target, &args.out)?;
            for (path, e) in args.images.iter().zip(&results) {
                let cams: Vec<String> = e
                    .cams
                    .iter()
                    .map(|c| match c.peak {
                        Some([x, y]) => format!("{} peak ({x}, {y})", c.label),
                        None => format!("{} blank", c.label),
                    })
                    .collect();
                let finding = if e.positive_labels.is_empty() {
                    format!("no finding (top {} {:.3})", e.top_label, e.top_probability)
                } else {
                    format!("{} {:.3}", e.positive_labels.join(", "), e.top_probability)
                };
                let ood = match (e.ood_score, e.out_of_distribution) {
                    (Some(score), Some(true)) => format!("OUT OF DISTRIBUTION (score {score:.1})"),
                    (Some(score), _) => format!("in distribution (score {score:.1})"),
                    (None, _) => "distribution unknown (no reference)".to_owned(),
                };
                println!(
                    "{}: {finding} [{}] {ood} on {}",
                    path.display(),
                    cams.join("; "),
                    e.device
                );
            }
            println!(
                "wrote {} image(s) into {}",
                results.len(),
                args.out.display()
            );
            Ok(())
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(blocking_threads())
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(crate::pipeline::run(*args))
        }
        Command::Bench(args) => {
            let bundle = bundle::resolve(&args.model, &args.model_args.models_dir)?;
            let device = args
                .model_args
                .device
                .resolve_one()
                .map_err(anyhow::Error::msg)?;
            let parallelism = Parallelism::resolve(args.model_args.replicas(), device);
            let report = bench::run(
                &bundle,
                (
                    device,
                    Precision::resolve(args.model_args.precision, device),
                ),
                parallelism,
                args.batch.max(1),
                args.seconds,
                args.method,
                args.headline,
            )
            .context("benchmarking the model")?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "model {} on {} in {} ({} replica(s) × {} thread(s)), batch {}, {}",
                    report.model,
                    report.device,
                    report.precision,
                    report.replicas,
                    report.threads,
                    report.batch,
                    report.method
                );
                for l in &report.loops {
                    println!(
                        "  {:<36} {:>8.1} images/s  {:>5.2}× forward",
                        l.name, l.images_per_s, l.ratio
                    );
                }
            }
            Ok(())
        }
    }
}

/// Threads for the worker's blocking I/O: reading blobs from a local directory (object_store
/// hands each read to one), loading models. Tokio's default (512) lets every burst of the few
/// hundred jobs a worker holds add threads (see `pipeline::cpu` for what that cost); a read from
/// a local disk takes microseconds, so a few threads a core keep up.
fn blocking_threads() -> usize {
    4 * crate::device::host_cores()
}
