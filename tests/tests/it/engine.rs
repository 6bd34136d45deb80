//! The Grad-CAM engine on real libtorch: correctness against pytorch-grad-cam, localisation
//! on unseen synthetic radiographs, batch invariance, and bad input.

use std::{io::Write, path::Path, process::Command};

use xcam_shared::{bundle::Bundle, imaging};
use xcam_tests::{demo_bundle, python, repo_root, synthetic_set};
use xcam_worker::{
    device::DeviceSpec,
    engine::{
        Engine, EngineError, EngineOptions, LabelSelection, LoadedModel, Method, Precision, Target,
        preprocess,
    },
    explain,
};

fn engine(bundle: &Path) -> Engine {
    engine_on(bundle, &DeviceSpec::Cpu, None)
}

fn engine_on(bundle: &Path, device: &DeviceSpec, precision: Option<Precision>) -> Engine {
    Engine::start(
        Bundle::load(bundle).expect("bundle loads"),
        device,
        EngineOptions {
            precision,
            ..EngineOptions::default()
        },
    )
    .expect("engine starts")
}

/// The GPU the GPU tests run on, or `None` (and a line saying they were skipped).
fn gpu(test: &str) -> Option<tch::Device> {
    if tch::Cuda::is_available() && tch::Cuda::device_count() > 0 {
        Some(tch::Device::Cuda(0))
    } else {
        // Past the test harness's capture (it takes print! and eprint! only), so that a run
        // without a GPU says so whether or not the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped, libtorch sees no CUDA device on this machine"
        );
        None
    }
}

/// The DenseNet-121 bundle (torchvision architecture, 18 outputs, random weights, a reference
/// from synthetic radiographs), exported once; `make bench` uses the same.
fn densenet_bundle() -> std::path::PathBuf {
    let dir = repo_root().join("target/bench-models/densenet121");
    if !dir.join("reference.npz").exists() {
        let out = python(&[
            "models/tools/export.py",
            "--arch",
            "densenet121",
            "--num-classes",
            "18",
            "--out",
            dir.to_str().unwrap(),
            "--reference-synthetic",
            "200",
        ]);
        assert!(
            out.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

fn reference_check(bundle: &Path, labels: LabelSelection, count: &str) {
    reference_check_on(bundle, labels, count, &engine(bundle), "0.99");
}

/// Explains `count` images with `engine` and compares every method's maps with pytorch-grad-cam
/// (fp32, on the CPU) at Pearson r ≥ `min_r`.
fn reference_check_on(
    bundle: &Path,
    labels: LabelSelection,
    count: &str,
    engine: &Engine,
    min_r: &str,
) {
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    let reference = repo_root().join("tests/reference/gradcam_reference.py");
    let out = python(&[
        reference.to_str().unwrap(),
        "prepare",
        images.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--count",
        count,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut paths: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    paths.sort();
    for method in Method::ALL {
        let out_dir = work.path().join(method.as_str());
        explain::run(
            engine,
            &paths,
            &Target {
                method,
                labels: labels.clone(),
                ..Target::default()
            },
            &out_dir,
        )
        .expect("explain");
        let out = python(&[
            reference.to_str().unwrap(),
            "compare",
            out_dir.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
            "--min-r",
            min_r,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!(
            "{} {method} on {} in {}: {}",
            bundle.display(),
            engine.device(),
            engine.precision(),
            stdout.trim()
        );
        assert!(
            out.status.success(),
            "{method} disagrees with pytorch-grad-cam:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn demo_maps_match_pytorch_grad_cam_for_every_method() {
    reference_check(&demo_bundle(), LabelSelection::All, "6");
}

#[test]
fn densenet121_maps_match_pytorch_grad_cam_for_every_method() {
    let labels = LabelSelection::Named(vec![
        "Atelectasis".into(),
        "Effusion".into(),
        "Nodule".into(),
    ]);
    reference_check(&densenet_bundle(), labels, "2");
}

/// On a GPU, in each precision, both bundles' maps against pytorch-grad-cam: r ≥ 0.99 in fp32,
/// r ≥ 0.98 in bf16 and fp16 (the tolerance the README gives).
#[test]
fn on_a_gpu_maps_match_pytorch_grad_cam_in_every_precision() {
    let Some(device) = gpu("on_a_gpu_maps_match_pytorch_grad_cam_in_every_precision") else {
        return;
    };
    let on_gpu = DeviceSpec::Cuda(vec![match device {
        tch::Device::Cuda(n) => n,
        _ => unreachable!(),
    }]);
    let densenet_labels = LabelSelection::Named(vec!["Atelectasis".into(), "Effusion".into()]);
    for (precision, min_r) in [
        (Precision::Fp32, "0.99"),
        (Precision::Bf16, "0.98"),
        (Precision::Fp16, "0.98"),
    ] {
        for (bundle, labels, count) in [
            (demo_bundle(), LabelSelection::All, "6"),
            (densenet_bundle(), densenet_labels.clone(), "2"),
        ] {
            let engine = engine_on(&bundle, &on_gpu, Some(precision));
            assert_eq!(engine.device(), "cuda:0", "the engine says where it ran");
            reference_check_on(&bundle, labels, count, &engine, min_r);
        }
    }
}

/// AUC by the rank-sum statistic.
fn auc(scores: &[f32], positive: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        if positive[i] {
            rank_sum += (rank + 1) as f64;
        }
    }
    let n_pos = positive.iter().filter(|p| **p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[test]
fn demo_model_finds_and_localises_planted_findings_it_never_saw() {
    let work = tempfile::tempdir().unwrap();
    // Seed 4242 is used by no training, validation or sample set.
    synthetic_set(work.path(), 4242, 240);
    let csv = std::fs::read_to_string(work.path().join("findings.csv")).unwrap();
    let mut boxes: std::collections::BTreeMap<String, Vec<(String, [f64; 4], f64)>> =
        Default::default();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let entry = boxes.entry(f[0].to_owned()).or_default();
        if !f[1].is_empty() {
            let n = |i: usize| f[i].parse::<f64>().unwrap();
            entry.push((f[1].to_owned(), [n(2), n(3), n(4), n(5)], n(6).max(n(7))));
        }
    }
    let engine = engine(&demo_bundle());
    let labels = engine.bundle().labels().to_vec();
    let thresholds = engine.bundle().manifest.model.thresholds.clone();
    let mut scores = vec![Vec::new(); labels.len()];
    let mut truth = vec![Vec::new(); labels.len()];
    let (mut hits, mut true_positives) = (vec![0usize; labels.len()], vec![0usize; labels.len()]);
    for (file, findings) in &boxes {
        let bytes = std::fs::read(work.path().join(file)).unwrap();
        let image = imaging::decode(&bytes).unwrap();
        let (e, _) = engine
            .explain_blocking(
                &image,
                Target {
                    method: Method::GradCam,
                    labels: LabelSelection::All,
                    ..Target::default()
                },
            )
            .unwrap();
        for (j, label) in labels.iter().enumerate() {
            let p = e.predictions[label];
            let planted: Vec<_> = findings.iter().filter(|f| &f.0 == label).collect();
            scores[j].push(p);
            truth[j].push(!planted.is_empty());
            if planted.is_empty() || p < thresholds[j] {
                continue;
            }
            true_positives[j] += 1;
            let [x, y] = e
                .cams
                .iter()
                .find(|c| &c.label == label)
                .unwrap()
                .peak
                .expect("a positive label has a map");
            let (x, y) = (f64::from(x), f64::from(y));
            let near = |(_, b, side): &&(String, [f64; 4], f64)| {
                let m = 0.1 * side;
                x >= b[0] - m && x < b[2] + m && y >= b[1] - m && y < b[3] + m
            };
            if planted.iter().any(near) {
                hits[j] += 1;
            }
        }
    }
    for (j, label) in labels.iter().enumerate() {
        let a = auc(&scores[j], &truth[j]);
        let hit_rate = hits[j] as f64 / true_positives[j].max(1) as f64;
        println!(
            "{label}: AUC {a:.3} on {} images; Grad-CAM peak on the finding in {}/{} true positives ({:.1}%)",
            scores[j].len(),
            hits[j],
            true_positives[j],
            100.0 * hit_rate
        );
        assert!(a >= 0.95, "{label}: AUC {a:.3} < 0.95");
        assert!(
            true_positives[j] >= 20,
            "{label}: only {} true positives",
            true_positives[j]
        );
        assert!(
            hit_rate >= 0.9,
            "{label}: peak on the finding in only {:.1}% of true positives",
            100.0 * hit_rate
        );
    }
}

#[test]
fn an_image_gets_the_same_map_alone_or_in_a_batch() {
    let engine = engine(&demo_bundle());
    let zip = std::fs::read(repo_root().join("models/demo/samples/samples.zip")).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let images: Vec<_> = (0..4)
        .map(|i| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut archive.by_index(i).unwrap(), &mut bytes).unwrap();
            imaging::decode(&bytes).unwrap()
        })
        .collect();
    let target = Target {
        method: Method::GradCam,
        labels: LabelSelection::All,
        ..Target::default()
    };
    let (alone, inferred) = engine.explain_blocking(&images[0], target.clone()).unwrap();
    assert_eq!(inferred.batch_size, 1);
    // Submit four at once so they share one batch.
    let spec = &engine.bundle().manifest.input;
    // Prepare first, then submit back to back, well inside the batching window.
    let prepared: Vec<_> = images
        .iter()
        .map(|im| xcam_worker::engine::preprocess::prepare(im, spec))
        .collect();
    let pending: Vec<_> = prepared
        .into_iter()
        .map(|p| (p.geometry, engine.submit(p.input, target.clone()).unwrap()))
        .collect();
    let mut first = None;
    for (geometry, rx) in pending {
        let inferred = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(inferred.batch_size, 4, "the four images ran as one batch");
        first.get_or_insert_with(|| {
            xcam_worker::engine::summary::finish(
                &inferred.output,
                &geometry,
                engine.bundle(),
                engine.device(),
            )
        });
    }
    let together = first.unwrap();
    for (i, (a, b)) in alone.cams.iter().zip(&together.cams).enumerate() {
        let worst = alone
            .map(i)
            .iter()
            .zip(&together.map(i))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{}: max |diff| {worst}", a.label);
        assert_eq!(a.peak, b.peak);
    }
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
        b.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
    );
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
    }
    ab / (aa * bb).sqrt().max(1e-12)
}

/// bf16 and fp16 against fp32 on the same inputs: the 36 demo samples, every label's map.
/// Tolerances (README): probabilities within 0.05, maps at Pearson r ≥ 0.98 each.
#[test]
fn reduced_precision_maps_agree_with_fp32_on_the_same_input() {
    reduced_precision_agrees_on(tch::Device::Cpu);
}

/// The same on a GPU, where bf16 is the default.
#[test]
fn on_a_gpu_reduced_precision_maps_agree_with_fp32_on_the_same_input() {
    if let Some(device) = gpu("on_a_gpu_reduced_precision_maps_agree_with_fp32_on_the_same_input") {
        reduced_precision_agrees_on(device);
    }
}

fn reduced_precision_agrees_on(device: tch::Device) {
    let bundle = Bundle::load(&demo_bundle()).unwrap();
    let spec = bundle.manifest.input.clone();
    let zip = std::fs::read(repo_root().join("models/demo/samples/samples.zip")).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let inputs: Vec<tch::Tensor> = (0..archive.len())
        .map(|i| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut archive.by_index(i).unwrap(), &mut bytes).unwrap();
            preprocess::prepare(&imaging::decode(&bytes).unwrap(), &spec).input
        })
        .collect();
    let x = tch::Tensor::stack(&inputs, 0);
    let targets = vec![
        Target {
            labels: LabelSelection::All,
            ..Target::default()
        };
        inputs.len()
    ];
    let run = |precision| {
        LoadedModel::load(bundle.clone(), device, precision)
            .and_then(|model| model.explain(&x, &targets))
    };
    let full = run(Precision::Fp32).unwrap();
    for precision in [Precision::Bf16, Precision::Fp16] {
        let reduced = match run(precision) {
            Ok(out) => out,
            // libtorch builds without CPU kernels for a precision refuse it at load, clearly.
            Err(e) => {
                println!("{precision} on {device:?}: refused at load ({e})");
                assert!(matches!(e, EngineError::Inference(_)), "{e}");
                continue;
            }
        };
        let (mut worst_p, mut worst_r) = (0f32, 1f64);
        for (a, b) in full.iter().zip(&reduced) {
            for (pa, pb) in a.probabilities.iter().zip(&b.probabilities) {
                worst_p = worst_p.max((pa - pb).abs());
            }
            for (ca, cb) in a.cams.iter().zip(&b.cams) {
                assert_eq!(ca.label, cb.label);
                if ca.raw_max > 0.0 {
                    worst_r = worst_r.min(pearson(&ca.grid.values, &cb.grid.values));
                }
            }
        }
        println!(
            "{precision} vs fp32 on {device:?}: largest probability difference {worst_p:.4}, lowest map r {worst_r:.4}"
        );
        assert!(
            worst_p <= 0.05,
            "{precision}: probabilities differ by {worst_p}"
        );
        assert!(
            worst_r >= 0.98,
            "{precision}: a map correlates at r = {worst_r}"
        );
    }
}

#[test]
fn bad_input_gets_clear_errors_and_the_engine_survives() {
    // A bundle whose checksum does not match.
    let broken = tempfile::tempdir().unwrap();
    for f in ["model.toml", "features.pt", "head.pt"] {
        std::fs::copy(demo_bundle().join(f), broken.path().join(f)).unwrap();
    }
    std::fs::write(broken.path().join("head.pt"), b"not a model").unwrap();
    let err = Bundle::load(broken.path()).unwrap_err().to_string();
    assert!(
        err.contains("head.pt has sha256") && err.contains(&broken.path().display().to_string()),
        "{err}"
    );

    let engine = engine(&demo_bundle());
    // A label the model does not have.
    let err = engine
        .check_target(&Target {
            method: Method::GradCam,
            labels: LabelSelection::Named(vec!["fracture".into()]),
            ..Target::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, EngineError::BadRequest(_))
            && err.to_string().contains("unknown label \"fracture\""),
        "{err}"
    );
    // A wrong-shaped tensor.
    let err = engine
        .submit(
            tch::Tensor::zeros([3, 64, 64], (tch::Kind::Float, tch::Device::Cpu)),
            Target {
                method: Method::GradCam,
                labels: LabelSelection::Top1,
                ..Target::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
    // Bytes that are no image, and a truncated PNG.
    assert_eq!(
        imaging::decode(b"hello, not an image").unwrap_err().code(),
        "unsupported_format"
    );
    let png = std::fs::read(repo_root().join("models/demo/samples/findings.csv")).unwrap();
    assert_eq!(
        imaging::decode(&png).unwrap_err().code(),
        "unsupported_format"
    );
    let mut good = Vec::new();
    image::GrayImage::from_pixel(64, 64, image::Luma([100]))
        .write_to(
            &mut std::io::Cursor::new(&mut good),
            image::ImageFormat::Png,
        )
        .unwrap();
    assert_eq!(
        imaging::decode(&good[..good.len() / 2]).unwrap_err().code(),
        "corrupt_image"
    );
    assert_eq!(
        imaging::decode(&{
            let mut tiny = Vec::new();
            image::GrayImage::new(8, 8)
                .write_to(
                    &mut std::io::Cursor::new(&mut tiny),
                    image::ImageFormat::Png,
                )
                .unwrap();
            tiny
        })
        .unwrap_err()
        .code(),
        "image_too_small"
    );

    // After all that, the inference thread still works.
    let image = imaging::decode(&good).unwrap();
    let (e, _) = engine
        .explain_blocking(
            &image,
            Target {
                method: Method::HiResCam,
                labels: LabelSelection::Top1,
                ..Target::default()
            },
        )
        .unwrap();
    assert_eq!(e.cams.len(), 1);
}

#[test]
fn explain_command_writes_overlay_map_and_record() {
    let out = tempfile::tempdir().unwrap();
    let samples = tempfile::tempdir().unwrap();
    let zip = std::fs::read(repo_root().join("models/demo/samples/samples.zip")).unwrap();
    zip::ZipArchive::new(std::io::Cursor::new(zip))
        .unwrap()
        .extract(samples.path())
        .unwrap();
    let status = Command::new(xcam_tests::bin("xcam-worker"))
        .args([
            "explain",
            "--model",
            demo_bundle().to_str().unwrap(),
            "--device",
            "cpu",
            "--labels",
            "top1",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .arg("--image")
        .arg(samples.path().join("cxr_0001.png"))
        .arg("--image")
        .arg(samples.path().join("cxr_0002.jpg"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for stem in ["cxr_0001", "cxr_0002"] {
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.path().join(format!("{stem}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(record["device"], "cpu");
        assert!(
            record["predictions"]["nodule"].is_number()
                && record["predictions"]["opacity"].is_number()
        );
        let cam = &record["cams"][0];
        assert_eq!(cam["label"], record["top_label"]);
        assert_eq!(cam["bbox"].as_array().unwrap().len(), 4);
        let (w, h) = (
            record["width"].as_u64().unwrap(),
            record["height"].as_u64().unwrap(),
        );
        let npy = std::fs::read(out.path().join(format!("{stem}.cam.npy"))).unwrap();
        let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        assert_eq!(
            npy.len() - 10 - header_len,
            (w * h * 4) as usize,
            "H×W float32 of the original image"
        );
        let overlay = image::open(out.path().join(format!("{stem}.overlay.png"))).unwrap();
        assert_eq!(
            (u64::from(overlay.width()), u64::from(overlay.height())),
            (w, h)
        );
    }
}
