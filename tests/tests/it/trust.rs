//! How far an explanation can be trusted: faithfulness of the maps, "no finding" said plainly,
//! and the out-of-distribution score, on real libtorch with the demo bundle and real
//! radiographs from pydicom's and pydicom-data's test sets.

use std::{collections::BTreeMap, path::PathBuf};

use tch::{Device, Kind, Tensor};
use xcam_shared::{bundle::Bundle, imaging};
use xcam_tests::{demo_bundle, demo_samples_zip, python, repo_root, synthetic_set};
use xcam_worker::{
    device::DeviceSpec,
    engine::{
        Engine, EngineOptions, Faithfulness, LabelSelection, LoadedModel, Method, Precision,
        Target, faithfulness, preprocess,
    },
};

fn engine(bundle: &std::path::Path) -> Engine {
    Engine::start(
        Bundle::load(bundle).expect("bundle loads"),
        &DeviceSpec::Cpu,
        EngineOptions::default(),
    )
    .expect("engine starts")
}

/// The demo samples by entry name, and their planted findings' labels.
fn demo_samples() -> Vec<(String, imaging::GrayImage, Vec<String>)> {
    let csv =
        std::fs::read_to_string(repo_root().join("models/demo/samples/findings.csv")).unwrap();
    let mut planted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let labels = planted.entry(f[0].to_owned()).or_default();
        if !f[1].is_empty() {
            labels.push(f[1].to_owned());
        }
    }
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(demo_samples_zip())).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            let labels = planted.remove(&name).unwrap_or_default();
            (name, imaging::decode(&bytes).unwrap(), labels)
        })
        .collect()
}

/// Real images from the test sets the set-up installs (both MIT): pydicom-data's
/// computed-radiography chest (NEMA WG-04 RG1), as xcam reads the DICOM, and pydicom's CT and MR
/// slices (which xcam refuses as DICOM: not radiographs), written as 16-bit PNGs.
fn real_images() -> Vec<(String, imaging::GrayImage)> {
    let dir = tempfile::tempdir().unwrap();
    let out = python(&[
        "-c",
        r#"
import sys, data_store, pydicom, numpy as np, pathlib as p
from PIL import Image
print(p.Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm")
tests = p.Path(pydicom.__file__).parent / "data" / "test_files"
for name in ["CT_small", "MR_small"]:
    a = pydicom.dcmread(tests / (name + ".dcm")).pixel_array.astype(np.float64)
    a = (a - a.min()) / max(a.max() - a.min(), 1)
    out = p.Path(sys.argv[1]) / (name + ".png")
    Image.fromarray((a * 65535).astype(np.uint16)).save(out)
    print(out)
"#,
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let path = PathBuf::from(line);
            let bytes = std::fs::read(&path).unwrap();
            let decoded = imaging::decode_with(&bytes, &imaging::ImageLimits::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                decoded.image,
            )
        })
        .collect()
}

fn gradcam(faithfulness: Faithfulness, labels: LabelSelection) -> Target {
    Target {
        method: Method::GradCam,
        labels,
        faithfulness,
    }
}

/// A map centred on the image: a Gaussian with a quarter of the side as its deviation.
fn centred_blob(h: i64, w: i64) -> Tensor {
    let ys = Tensor::arange(h, (Kind::Float, Device::Cpu)).view([h, 1]) - (h as f64 - 1.0) / 2.0;
    let xs = Tensor::arange(w, (Kind::Float, Device::Cpu)).view([1, w]) - (w as f64 - 1.0) / 2.0;
    let (sy, sx) = (h as f64 / 4.0, w as f64 / 4.0);
    (-(ys.square() / (2.0 * sy * sy) + xs.square() / (2.0 * sx * sx))).exp()
}

#[test]
fn grad_cam_deletes_the_evidence_faster_than_a_random_map_or_a_centred_blob() {
    let bundle = Bundle::load(&demo_bundle()).unwrap();
    let spec = bundle.manifest.input.clone();
    let labels = bundle.labels().to_vec();
    let thresholds = bundle.manifest.model.thresholds.clone();
    let model = LoadedModel::load(bundle, Device::Cpu, Precision::Fp32).unwrap();
    tch::manual_seed(17);
    // Per label: true positives, Grad-CAM below the random map, below both baselines.
    let mut tally: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for (name, image, planted) in demo_samples() {
        let x = preprocess::prepare(&image, &spec).input.unsqueeze(0);
        for label in planted {
            let l = labels.iter().position(|n| *n == label).unwrap();
            let out = model
                .explain(
                    &x,
                    &[gradcam(
                        Faithfulness::Off,
                        LabelSelection::Named(vec![label.clone()]),
                    )],
                )
                .unwrap()
                .remove(0);
            if out.probabilities[l] < thresholds[l] {
                continue;
            }
            let grid = &out.cams[0].grid;
            let (h, w) = (grid.h as i64, grid.w as i64);
            let maps = Tensor::stack(
                &[
                    Tensor::from_slice(&grid.values).view([h, w]),
                    Tensor::rand([h, w], (Kind::Float, Device::Cpu)),
                    centred_blob(h, w),
                ],
                0,
            );
            let inputs = x.repeat([3, 1, 1, 1]);
            let (deletion, insertion) =
                faithfulness::deletion_insertion(&model, &inputs, &maps, &[l, l, l]).unwrap();
            let t = tally.entry(label.clone()).or_default();
            t[0] += 1;
            t[1] += usize::from(deletion[0] < deletion[1]);
            t[2] += usize::from(deletion[0] < deletion[1] && deletion[0] < deletion[2]);
            println!(
                "{name} {label}: deletion AUC Grad-CAM {:.3}, random {:.3}, blob {:.3}; insertion {:.3} / {:.3} / {:.3}",
                deletion[0], deletion[1], deletion[2], insertion[0], insertion[1], insertion[2]
            );
        }
    }
    for (label, [n, random, both]) in &tally {
        println!(
            "{label}: Grad-CAM's deletion AUC below a random map's on {random} of {n} true positives, below both a random map's and a centred blob's on {both}"
        );
        assert!(*n >= 8, "{label}: only {n} true positives");
        assert!(
            *both as f64 >= 0.9 * *n as f64,
            "{label}: below both on {both} of {n}"
        );
    }
}

#[test]
fn faithfulness_comes_with_the_maps_that_asked_for_it_and_changes_nothing_else() {
    let engine = engine(&demo_bundle());
    let samples = demo_samples();
    let (_, image, _) = samples.iter().find(|s| !s.2.is_empty()).unwrap();
    // Three settings in one dynamic batch: each image gets exactly what it asked for.
    let pending: Vec<_> = Faithfulness::ALL
        .iter()
        .copied()
        .map(|f| {
            engine
                .enqueue(image, gradcam(f, LabelSelection::All))
                .unwrap()
        })
        .collect();
    let results: Vec<_> = pending
        .into_iter()
        .map(|p| p.wait().unwrap().finish().0)
        .collect();
    let [off, drop, full] = &results[..] else {
        unreachable!()
    };
    for (label, p) in &off.predictions {
        assert!(
            (p - full.predictions[label]).abs() < 1e-5,
            "the extra forwards change no prediction"
        );
    }
    assert_eq!(off.cams.len(), 2);
    for (i, cam) in off.cams.iter().enumerate() {
        assert!(cam.faithfulness.is_none(), "off measures nothing");
        let worst = cam
            .grid
            .values
            .iter()
            .zip(&full.cams[i].grid.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "nor any map: off by {worst}");
        let d = drop.cams[i]
            .faithfulness
            .expect("drop measures the confidence drop");
        assert!(
            d.deletion_auc.is_none() && d.insertion_auc.is_none(),
            "but no curves"
        );
        let f = full.cams[i].faithfulness.expect("full measures everything");
        let p = off.predictions[&cam.label];
        assert!((d.masked_probability - f.masked_probability).abs() < 1e-5);
        let expected = ((p - d.masked_probability).max(0.0) / p).min(1.0);
        assert!(
            (d.confidence_drop - expected).abs() < 1e-5,
            "{d:?} for p {p}"
        );
        assert_eq!(d.confidence_increase, d.masked_probability > p);
        for auc in [f.deletion_auc.unwrap(), f.insertion_auc.unwrap()] {
            assert!((0.0..=1.0).contains(&auc), "{auc}");
        }
    }
}

#[test]
fn every_new_method_runs_gradient_free_or_not_in_one_batch() {
    let engine = engine(&demo_bundle());
    let (_, image, _) = demo_samples().remove(0);
    let pending: Vec<_> = Method::ALL
        .into_iter()
        .map(|method| {
            let target = Target {
                method,
                labels: LabelSelection::All,
                ..Target::default()
            };
            (method, engine.enqueue(&image, target).unwrap())
        })
        .collect();
    let mut eigen = Vec::new();
    for (method, p) in pending {
        let (e, _) = p.wait().unwrap().finish();
        assert_eq!(e.cams.len(), 2, "{method}");
        assert!(e.cams.iter().all(|c| c.method == method), "{method}");
        if method == Method::EigenCam {
            eigen = e.cams.iter().map(|c| c.grid.clone()).collect();
        }
    }
    assert_eq!(
        eigen[0], eigen[1],
        "EigenCAM is not class-discriminative: one map per image"
    );
}

#[test]
fn no_finding_is_said_plainly() {
    let engine = engine(&demo_bundle());
    let thresholds = engine.bundle().manifest.model.thresholds.clone();
    let labels = engine.bundle().labels().to_vec();
    let mut said = (0, 0);
    for (name, image, planted) in demo_samples() {
        let (e, _) = engine
            .explain_blocking(&image, gradcam(Faithfulness::Off, LabelSelection::Positive))
            .unwrap();
        let mut expected: Vec<&String> = labels
            .iter()
            .enumerate()
            .filter(|(i, l)| e.predictions[*l] >= thresholds[*i])
            .map(|(_, l)| l)
            .collect();
        expected.sort_by(|a, b| e.predictions[*b].total_cmp(&e.predictions[*a]));
        assert_eq!(
            e.positive_labels.iter().collect::<Vec<_>>(),
            expected,
            "{name}"
        );
        for cam in &e.cams {
            assert_eq!(cam.positive, Some(expected.contains(&&cam.label)), "{name}");
        }
        if e.positive_labels.is_empty() {
            // `positive` falls back to the top label's map, which says it is not a finding.
            assert_eq!(e.cams.len(), 1);
            assert_eq!(e.cams[0].positive, Some(false), "{name}");
            said.0 += usize::from(planted.is_empty());
        } else {
            said.1 += 1;
        }
    }
    println!(
        "no finding on {} clean samples; findings on {}",
        said.0, said.1
    );
    assert!(said.0 >= 5 && said.1 >= 5, "{said:?}");
}

#[test]
fn real_radiographs_are_out_of_distribution_and_unseen_synthetic_ones_are_not() {
    let engine = engine(&demo_bundle());
    let work = tempfile::tempdir().unwrap();
    // Seed 4243 is used by no training, calibration or sample set.
    synthetic_set(work.path(), 4243, 200);
    let mut flagged = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(work.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv") {
            continue;
        }
        let image = imaging::decode(&std::fs::read(&path).unwrap()).unwrap();
        let (e, _) = engine.explain_blocking(&image, Target::default()).unwrap();
        let score = e.ood_score.expect("the demo bundle has a reference");
        assert_eq!(
            e.out_of_distribution,
            Some(score > e.ood_threshold.unwrap())
        );
        seen += 1;
        if e.out_of_distribution == Some(true) {
            flagged.push(score);
        }
    }
    let share = flagged.len() as f64 / seen as f64;
    println!(
        "unseen synthetic radiographs flagged: {} of {seen} {flagged:?}",
        flagged.len()
    );
    assert!(
        share <= 0.05,
        "{:.1}% of in-distribution images flagged",
        100.0 * share
    );

    for (name, image) in real_images() {
        let (e, _) = engine.explain_blocking(&image, Target::default()).unwrap();
        println!(
            "{name}: ood score {:.1} (threshold {:.1}), top {} {:.3}",
            e.ood_score.unwrap(),
            e.ood_threshold.unwrap(),
            e.top_label,
            e.top_probability
        );
        assert_eq!(
            e.out_of_distribution,
            Some(true),
            "{name} passed as in-distribution"
        );
    }
}

#[test]
fn a_bundle_without_a_reference_says_the_score_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["features.pt", "head.pt"] {
        std::fs::copy(demo_bundle().join(file), dir.path().join(file)).unwrap();
    }
    let manifest = std::fs::read_to_string(demo_bundle().join("model.toml")).unwrap();
    let mut without = toml::from_str::<toml::Table>(&manifest).unwrap();
    without.remove("reference");
    without["files"]
        .as_table_mut()
        .unwrap()
        .remove("reference.npz");
    std::fs::write(
        dir.path().join("model.toml"),
        toml::to_string(&without).unwrap(),
    )
    .unwrap();
    let engine = engine(dir.path());
    let (_, image, _) = demo_samples().remove(0);
    let (e, _) = engine.explain_blocking(&image, Target::default()).unwrap();
    assert_eq!(
        (e.ood_score, e.ood_threshold, e.out_of_distribution),
        (None, None, None)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_carry_trust_through_the_json_the_csv_and_the_report() {
    let stack = xcam_tests::Stack::new().await;
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &[]);
    let deadline = std::time::Duration::from_secs(240);
    // The real chest radiograph among the demo's synthetic samples.
    let rg1 = python(&[
        "-c",
        "import data_store, pathlib as p; print(p.Path(data_store.__file__).parent / 'data' / 'RG1_UNCR.dcm')",
    ]);
    let rg1 = std::fs::read(String::from_utf8(rg1.stdout).unwrap().trim()).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(demo_samples_zip())).unwrap();
    for i in 0..12 {
        let mut entry = archive.by_index(i).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        entries.push((entry.name().unwrap().to_string(), bytes));
    }
    entries.push(("rg1.dcm".into(), rg1));
    let refs: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    let zip = xcam_tests::zip_of(&refs);

    let (status, refused) = api.upload(zip.clone(), &[("faithfulness", "some")]).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("invalid_faithfulness")),
        "{refused}"
    );

    // The project's default applies when the upload says nothing; the upload's own word wins.
    let mut runs = Vec::new();
    for (project_default, asked) in [
        (Faithfulness::Drop, None),
        (Faithfulness::Drop, Some("full")),
    ] {
        assert!(
            xcam_shared::db::access::set_faithfulness(&stack.db.pool, "test", project_default)
                .await
                .unwrap()
        );
        let mut fields = vec![("labels", "all")];
        fields.extend(asked.map(|a| ("faithfulness", a)));
        let (status, created) = api.upload(zip.clone(), &fields).await;
        assert_eq!(status, 202, "{created}");
        runs.push((
            asked.unwrap_or("drop"),
            created["id"].as_str().unwrap().to_owned(),
        ));
    }
    for (setting, id) in runs {
        let batch = api.wait_for_batch(&id, deadline).await;
        assert_eq!(batch["status"], "succeeded", "{batch}");
        assert_eq!(batch["faithfulness"], setting);
        let (_, page) = api.get_json(&format!("/v1/batches/{id}/results")).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 13);
        let mut no_finding = 0;
        for item in items {
            let positive: Vec<&str> = item["positive_labels"]
                .as_array()
                .expect("positive_labels on every new result")
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            no_finding += usize::from(positive.is_empty());
            let real = item["entry_name"] == "rg1.dcm";
            assert_eq!(item["out_of_distribution"], real, "{item}");
            assert!(item["ood_score"].as_f64().unwrap() > 0.0);
            for cam in item["cams"].as_array().unwrap() {
                let label = cam["label"].as_str().unwrap();
                assert_eq!(cam["positive"], positive.contains(&label), "{item}");
                let f = &cam["faithfulness"];
                assert!(f["confidence_drop"].as_f64().is_some(), "{item}");
                assert_eq!(f["deletion_auc"].is_number(), setting == "full", "{item}");
            }
        }
        assert!(no_finding >= 1, "the samples include clean images");

        let (_, report) = api.get_json(&format!("/v1/batches/{id}/report")).await;
        assert_eq!(
            report["warnings_by_code"]["out_of_distribution"], 1,
            "{report}"
        );
        let (status, text) = api.get_text(&format!("/v1/batches/{id}/results.csv")).await;
        assert_eq!(status, 200);
        let (_, rows) = xcam_tests::parse_csv(&text);
        assert_eq!(rows.len(), 13);
        for row in &rows {
            let positive: Vec<&str> = row["positive_labels"]
                .split('|')
                .filter(|s| !s.is_empty())
                .collect();
            let explained_positive = positive.contains(&row["explained_label"].as_str());
            assert_eq!(
                row["explained_positive"],
                explained_positive.to_string(),
                "{row:?}"
            );
            assert_eq!(
                row["out_of_distribution"],
                (row["entry_name"] == "rg1.dcm").to_string()
            );
            assert!(!row["ood_score"].is_empty() && !row["confidence_drop"].is_empty());
            assert_eq!(
                !row["deletion_auc"].is_empty(),
                setting == "full",
                "{row:?}"
            );
        }
    }
    stack.finish().await;
}
