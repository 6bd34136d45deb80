//! Real radiographs in, bad input out: DICOM decoding and its rules, image validation, hostile
//! archives, and the promise that no patient identifier reaches a table, a log, a CSV or an
//! overlay.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use xcam_shared::imaging::{self, Format, ImageLimits};
use xcam_tests::{Stack, Store, contains, pg_dump, png, python, redis_save, repo_root, zip_of};

/// Writes the test DICOMs (tests/reference/make_dicoms.py) and returns their directory and the
/// PHI values to look for.
fn dicoms() -> (tempfile::TempDir, Vec<String>, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = python(&[
        "tests/reference/make_dicoms.py",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phi: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("phi.json")).unwrap()).unwrap();
    let values = phi["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let rg1 = PathBuf::from(phi["rg1_dir"].as_str().unwrap());
    (dir, values, rg1)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mean(image: &imaging::GrayImage, x: (f32, f32), y: (f32, f32)) -> f32 {
    let (w, h) = (image.width as f32, image.height as f32);
    let (mut sum, mut n) = (0.0, 0.0);
    for row in (y.0 * h) as usize..(y.1 * h) as usize {
        for col in (x.0 * w) as usize..(x.1 * w) as usize {
            sum += image.pixels[row * image.width as usize + col];
            n += 1.0;
        }
    }
    sum / n
}

#[test]
fn the_real_chest_radiograph_renders_upright_with_dark_lungs_and_bright_bone() {
    let (_dir, _, rg1) = dicoms();
    let reference =
        imaging::decode_with(&read(&rg1.join("RG1_UNCR.dcm")), &ImageLimits::default()).unwrap();
    assert_eq!(reference.format, Format::Dicom);
    let image = &reference.image;
    assert_eq!(
        (image.width, image.height),
        (1841, 1955),
        "portrait, as acquired"
    );
    let lungs =
        (mean(image, (0.2, 0.35), (0.3, 0.55)) + mean(image, (0.65, 0.8), (0.3, 0.55))) / 2.0;
    let mediastinum = mean(image, (0.45, 0.55), (0.3, 0.6));
    let abdomen = mean(image, (0.3, 0.7), (0.9, 0.98));
    println!(
        "RG1 (MONOCHROME1): lungs {lungs:.3}, mediastinum {mediastinum:.3}, below the diaphragm {abdomen:.3}"
    );
    assert!(
        lungs + 0.1 < mediastinum,
        "lungs ({lungs:.3}) darker than the mediastinum ({mediastinum:.3}): polarity"
    );
    assert!(
        lungs + 0.1 < abdomen,
        "lungs ({lungs:.3}) darker than below the diaphragm ({abdomen:.3}): upright"
    );
    // The JPEG 2000 encodings give the same picture.
    for (file, tolerance) in [("RG1_J2KR.dcm", 1e-3), ("RG1_J2KI.dcm", 0.05)] {
        let other = imaging::decode(&read(&rg1.join(file))).unwrap();
        let mad = other
            .pixels
            .iter()
            .zip(&image.pixels)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / image.pixels.len() as f32;
        assert!(
            mad < tolerance,
            "{file}: mean |diff| {mad} from the uncompressed original"
        );
    }
}

#[test]
fn dicom_rules_give_stable_codes_and_warnings() {
    let (dir, _, rg1) = dicoms();
    let code = |name: &str| {
        imaging::decode_with(&read(&dir.path().join(name)), &ImageLimits::default())
            .map(|d| d.warnings)
            .map_err(|e| e.code())
    };
    assert_eq!(code("cr_phi.dcm").unwrap(), vec![]);
    assert_eq!(code("cr_no_preamble.dcm").unwrap(), vec![]);
    let warnings: Vec<String> = code("cr_warnings.dcm")
        .unwrap()
        .into_iter()
        .map(|w| w.code)
        .collect();
    assert_eq!(
        warnings,
        [
            "body_part_not_chest",
            "view_not_frontal",
            "burned_in_annotation"
        ]
    );
    assert_eq!(code("cr_two_frames.dcm").unwrap()[0].code, "multi_frame");
    assert_eq!(
        code("dx_for_processing.dcm").unwrap_err(),
        "dicom_for_processing"
    );
    assert_eq!(code("mr.dcm").unwrap_err(), "dicom_unsupported_modality");
    assert_eq!(
        code("cr_no_modality.dcm").unwrap_err(),
        "dicom_missing_attribute"
    );
    assert_eq!(
        code("cr_rgb.dcm").unwrap_err(),
        "dicom_unsupported_photometric"
    );
    assert_eq!(
        code("cr_jpeg_extended.dcm").unwrap_err(),
        "dicom_unsupported_transfer_syntax"
    );
    assert_eq!(code("cr_truncated.dcm").unwrap_err(), "corrupt_image");
    // MONOCHROME1 is inverted: the same scene as MONOCHROME2 comes out the same way round.
    let mono1 = imaging::decode(&read(&dir.path().join("dx_mono1.dcm"))).unwrap();
    let mono2 = imaging::decode(&read(&dir.path().join("cr_phi.dcm"))).unwrap();
    let mad = mono1
        .pixels
        .iter()
        .zip(&mono2.pixels)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / mono1.pixels.len() as f32;
    assert!(mad < 0.01, "MONOCHROME1 inverted: mean |diff| {mad}");
    // Real files from pydicom-data: an MR, a colour secondary capture.
    assert_eq!(
        imaging::decode(&read(&rg1.join("MR2_UNCR.dcm")))
            .unwrap_err()
            .code(),
        "dicom_unsupported_modality"
    );
    // Size limits are configurable.
    let tight = ImageLimits {
        min_side: 300,
        ..ImageLimits::default()
    };
    assert_eq!(
        imaging::decode_with(&read(&dir.path().join("cr_phi.dcm")), &tight)
            .unwrap_err()
            .code(),
        "image_too_small"
    );
    let small_files = ImageLimits {
        max_bytes: 1000,
        ..ImageLimits::default()
    };
    assert_eq!(
        imaging::decode_with(&read(&dir.path().join("cr_phi.dcm")), &small_files)
            .unwrap_err()
            .code(),
        "file_too_large"
    );
}

/// Sets the "encrypted" flag of the entry named `name` in a ZIP's local and central headers.
fn mark_encrypted(mut zip: Vec<u8>, name: &str) -> Vec<u8> {
    for (sig, flag_at, name_at) in [(b"PK\x03\x04", 6usize, 30usize), (b"PK\x01\x02", 8, 46)] {
        let mut i = 0;
        while let Some(pos) = zip[i..].windows(4).position(|w| w == sig) {
            let at = i + pos;
            if zip[at + name_at..].starts_with(name.as_bytes()) {
                zip[at + flag_at] |= 1;
            }
            i = at + 4;
        }
    }
    zip
}

/// Renames every occurrence of `from` to `to` (same length) in a ZIP's headers.
fn rename(mut zip: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    while let Some(pos) = zip[i..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
    {
        zip[i + pos..i + pos + to.len()].copy_from_slice(to.as_bytes());
        i += pos + to.len();
    }
    zip
}

fn with_symlink(mut entries: Vec<(&str, Vec<u8>)>, link: &str) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default();
        for (name, bytes) in entries.drain(..) {
            zip.start_file(name, options).unwrap();
            std::io::Write::write_all(&mut zip, &bytes).unwrap();
        }
        zip.add_symlink(link, "/etc/passwd", options).unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

async fn fetch_report(api: &xcam_tests::Producer, id: &str) -> Value {
    let (status, report) = api.get_json(&format!("/v1/batches/{id}/report")).await;
    assert_eq!(status, 200, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_end_in_clear_codes_and_write_nothing_outside_the_blob_store() {
    let stack = Stack::new().await;
    let api = stack.producer(&["--max-entries=12"]).await;
    let _worker = stack.worker("a", &[]);
    let inner = zip_of(&[("x.png", png(64, 64, 1))]);
    let archive = with_symlink(
        vec![
            ("good.png", png(64, 64, 2)),
            ("../../evil.png", png(64, 64, 3)),
            ("/abs/olute.png", png(64, 64, 4)),
            ("inner.zip", inner),
            ("secret.png", png(64, 64, 5)),
            ("Röntgen_ünïcode_名前.png", png(64, 64, 8)),
            // DICOM without its part-10 header: named like one, and a raw implicit-VR data set
            // (SOP Class UID, then Modality) with no telling name. Refused, never skipped.
            (
                "study/IM0001.DCM",
                b"\x10\x00\x10\x00\x08\x00\x00\x00DOE^JANE".to_vec(),
            ),
            (
                "export/0001",
                [
                    &[0x08, 0x00, 0x16, 0x00, 0x1a, 0x00, 0x00, 0x00][..],
                    b"1.2.840.10008.5.1.4.1.1.1\0",
                    &[0x08, 0x00, 0x60, 0x00, 0x02, 0x00, 0x00, 0x00],
                    b"CR",
                ]
                .concat(),
            ),
        ],
        "link.png",
    );
    let archive = mark_encrypted(archive, "secret.png");
    let (status, created) = api.upload(archive, &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, Duration::from_secs(120)).await;
    let report = fetch_report(&api, &id).await;
    assert_eq!(
        batch["status"], "completed_with_errors",
        "the good entries ran, the rest were refused: {batch}"
    );
    assert_eq!(batch["counts"]["succeeded"], 2, "{report}");
    let codes: std::collections::BTreeMap<String, i64> =
        serde_json::from_value(report["errors_by_code"].clone()).unwrap();
    let expected: std::collections::BTreeMap<String, i64> = [
        ("unsafe_path", 2),
        ("nested_archive", 1),
        ("encrypted_entry", 1),
        ("symlink_entry", 1),
        ("dicom_no_meta", 2),
    ]
    .map(|(c, n)| (c.to_owned(), n))
    .into();
    assert_eq!(codes, expected, "{report}");
    let (_, csv_text) = api.get_text(&format!("/v1/batches/{id}/results.csv")).await;
    assert!(
        csv_text.contains("Röntgen_ünïcode_名前.png"),
        "names in any script survive"
    );
    assert!(
        !repo_root().join("evil.png").exists() && !stack.blobs.path().join("../evil.png").exists()
    );
    let top: Vec<String> = std::fs::read_dir(stack.blobs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        top.iter().all(|d| d == "planes" || d == "derived"),
        "{top:?}"
    );

    // Refused outright: duplicate names, a bomb, too many entries, a broken central directory.
    let dupes = rename(
        zip_of(&[("dupa.png", png(64, 64, 6)), ("dupb.png", png(64, 64, 7))]),
        "dupb.png",
        "dupa.png",
    );
    let (status, body) = api.upload(dupes, &[("model", "demo")]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("duplicate_names")),
        "{body}"
    );
    let bomb = zip_of(&[("bomb.png", vec![0u8; 8 << 20])]);
    let (status, body) = api.upload(bomb, &[("model", "demo")]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("zip_bomb")),
        "{body}"
    );
    let many: Vec<(String, Vec<u8>)> = (0..13)
        .map(|i| (format!("{i}.png"), png(40, 40, i)))
        .collect();
    let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (status, body) = api.upload(zip_of(&many), &[("model", "demo")]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("too_many_entries")),
        "{body}"
    );
    let whole = zip_of(&[("a.png", png(64, 64, 9)), ("b.png", png(64, 64, 10))]);
    let (status, body) = api
        .upload(whole[..whole.len() - 30].to_vec(), &[("model", "demo")])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_zip")),
        "{body}"
    );
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(batches, 1, "refused uploads leave no batch behind");
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_images_are_rejected_with_codes_in_counts_csv_and_report() {
    let (dir, _, rg1) = dicoms();
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &[]);
    let good = png(96, 96, 1);
    let archive = zip_of(&[
        ("good.png", good.clone()),
        ("truncated.png", good[..good.len() / 2].to_vec()),
        ("tiny.png", png(8, 8, 2)),
        ("notes.txt", b"hello".to_vec()),
        ("mr.dcm", read(&dir.path().join("mr.dcm"))),
        (
            "processing.dcm",
            read(&dir.path().join("dx_for_processing.dcm")),
        ),
        ("lateral.dcm", read(&dir.path().join("cr_warnings.dcm"))),
        ("chest_j2k.dcm", read(&rg1.join("RG1_J2KI.dcm"))),
    ]);
    let (status, created) = api.upload(archive, &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, Duration::from_secs(180)).await;
    assert_eq!(batch["status"], "completed_with_errors", "{batch}");
    assert_eq!(
        (
            batch["counts"]["succeeded"].as_i64(),
            batch["counts"]["rejected"].as_i64()
        ),
        (Some(3), Some(4)),
        "{batch}"
    );
    assert_eq!(batch["skipped_entries"], 1);
    stack.assert_counts_kept(id.parse().unwrap()).await;
    let report = fetch_report(&api, &id).await;
    assert_eq!(
        report["errors_by_code"],
        serde_json::json!({"corrupt_image": 1, "image_too_small": 1, "dicom_unsupported_modality": 1, "dicom_for_processing": 1}),
        "{report}"
    );
    assert_eq!(report["warnings_by_code"]["view_not_frontal"], 1);
    assert_eq!(
        report["skipped"],
        serde_json::json!([{"entry_index": 3, "entry_name": "notes.txt", "reason": "not_an_image"}]),
        "{report}"
    );
    let (_, csv_text) = api.get_text(&format!("/v1/batches/{id}/results.csv")).await;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 7);
    let lateral = rows
        .iter()
        .find(|r| &r[col("entry_name")] == "lateral.dcm")
        .unwrap();
    assert_eq!(&lateral[col("status")], "succeeded");
    assert!(lateral[col("warnings")].contains("view_not_frontal"));
    let mr = rows
        .iter()
        .find(|r| &r[col("entry_name")] == "mr.dcm")
        .unwrap();
    assert_eq!(
        (&mr[col("status")], &mr[col("error_code")]),
        ("rejected", "dicom_unsupported_modality")
    );

    // A batch whose every entry is refused ends failed, with its report.
    let (status, created) = api
        .upload(
            zip_of(&[
                ("tiny.png", png(8, 8, 3)),
                ("mr.dcm", read(&dir.path().join("mr.dcm"))),
            ]),
            &[("model", "demo")],
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, Duration::from_secs(60)).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(
        fetch_report(&api, &id).await["errors"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Names are kept as the archive has them, whatever characters they hold (a NUL, which
    // Postgres cannot store, becomes U+FFFD), and a refused entry is finished when it is written.
    let names = [
        "tab\there.png",
        "line\nbreak.png",
        "back\\slash.png",
        "nul\0.png",
    ];
    let mut entries: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (*n, png(64, 64, 4))).collect();
    entries.push(("small.png", png(8, 8, 5)));
    let (status, created) = api.upload(zip_of(&entries), &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, Duration::from_secs(60)).await;
    assert_eq!(batch["status"], "completed_with_errors", "{batch}");
    let (_, page) = api.get_json(&format!("/v1/batches/{id}/results")).await;
    let items = page["items"].as_array().unwrap();
    let stored: Vec<&str> = items
        .iter()
        .map(|i| i["entry_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stored,
        [
            "tab\there.png",
            "line\nbreak.png",
            "back\\slash.png",
            "nul\u{FFFD}.png",
            "small.png"
        ]
    );
    assert_eq!(items[4]["error_code"], "image_too_small");
    assert!(items[4]["finished_at"].is_string(), "{}", items[4]);
    stack.finish().await;
}

/// DICOMs full of PHI (and the real pydicom-data CR files with their own values), uploaded once
/// with pseudonymised names (the entry names carry PHI too) and once as uploaded; then every
/// byte xcam holds is searched for every value: `pg_dump` of the whole database, every blob,
/// a Redis `SAVE`, both processes' logs, the CSVs, the report, images, overlays and maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_identifier_is_held_anywhere_with_or_without_pseudonyms() {
    no_patient_identifier_is_held(Store::Dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_identifier_is_held_on_s3_either() {
    no_patient_identifier_is_held(Store::S3).await;
}

async fn no_patient_identifier_is_held(store: Store) {
    let (dir, phi, rg1) = dicoms();
    let stack = Stack::storing_in(store).await;
    let api = stack.producer_process(&[]).await;
    let worker = stack.worker("a", &[]);
    let entries = |names: [&str; 6]| {
        zip_of(&[
            (names[0], read(&dir.path().join("cr_phi.dcm"))),
            (names[1], read(&rg1.join("RG1_UNCR.dcm"))),
            (names[2], read(&rg1.join("RG1_J2KR.dcm"))),
            (names[3], read(&dir.path().join("cr_truncated.dcm"))),
            (names[4], read(&dir.path().join("dx_mono1.dcm"))),
            // Skipped, not an image, and its name is as much PHI as the others'.
            (names[5], b"referral letter".to_vec()),
        ])
    };
    let mut batches = Vec::new();
    for (names, pseudonymize, labels) in [
        (
            [
                "Zebulon^Quixotic^Marmaduke.dcm",
                "MRN-73519-QX/b.dcm",
                "ALT-ID-99817.dcm",
                "d.dcm",
                "Zebulon_Quixotic_MRN-73519-QX.dcm",
                "Zebulon^Quixotic^Marmaduke referral.txt",
            ],
            "true",
            "all",
        ),
        // Names as uploaded; the top label's map is enough, the pixels are the same.
        (
            ["a.dcm", "b.dcm", "c.dcm", "d.dcm", "e.dcm", "f.txt"],
            "false",
            "top1",
        ),
    ] {
        let (status, created) = api
            .upload(
                entries(names),
                &[
                    ("model", "demo"),
                    ("labels", labels),
                    ("pseudonymize_names", pseudonymize),
                ],
            )
            .await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let batch = api.wait_for_batch(&id, Duration::from_secs(240)).await;
        assert_eq!(batch["counts"]["succeeded"], 4, "{batch}");
        batches.push(id);
    }

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![(
        "pg_dump of the database".into(),
        pg_dump(&stack.db.url, &[]),
    )];
    for id in &batches {
        let (_, csv_text) = api.get_text(&format!("/v1/batches/{id}/results.csv")).await;
        haystacks.push(("the CSV".into(), csv_text.into_bytes()));
        let (_, report) = api.get_text(&format!("/v1/batches/{id}/report")).await;
        haystacks.push(("the report".into(), report.into_bytes()));
        // Every image, overlay and map, as the API serves them.
        let (_, page) = api
            .get_json(&format!("/v1/batches/{id}/results?limit=100"))
            .await;
        for item in page["items"].as_array().unwrap() {
            let item_id = item["item_id"].as_str().unwrap();
            let mut artefacts = vec!["image.png".to_owned()];
            for cam in item["cams"].as_array().into_iter().flatten() {
                let label = cam["label"].as_str().unwrap();
                artefacts.push(format!("overlay.png?label={label}"));
                artefacts.push(format!("cam.npy?label={label}"));
            }
            if item["status"] != "succeeded" {
                continue;
            }
            for artefact in artefacts {
                let response = api
                    .client
                    .get(api.url(&format!("/v1/batches/{id}/items/{item_id}/{artefact}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{artefact}");
                let bytes = response.bytes().await.unwrap().to_vec();
                haystacks.push((format!("{artefact} of {item_id}"), bytes));
            }
        }
    }
    let (_, logs) = api.get_text("/v1/logs?format=csv&limit=1000").await;
    haystacks.push(("the log CSV".into(), logs.into_bytes()));
    haystacks.push(("the worker's log".into(), worker.log_text().into_bytes()));
    haystacks.push(("the API's log".into(), api.log_text().into_bytes()));
    haystacks.push(("a Redis SAVE".into(), redis_save(&stack.redis_url).await));
    let blobs = stack.blobs.all().await;
    for (name, bytes) in &blobs {
        haystacks.push((format!("the blob {name}"), bytes.to_vec()));
        haystacks.push((format!("the blob name {name}"), name.clone().into_bytes()));
    }
    let keys: Vec<&String> = blobs.iter().map(|(name, _)| name).collect();
    assert!(
        keys.iter().any(|b| b.contains("overlay.png"))
            && keys.iter().any(|b| b.contains("planes/")),
        "planes and overlays were searched: {keys:?}"
    );
    for value in &phi {
        for (place, bytes) in &haystacks {
            assert!(!contains(bytes, value), "{value:?} leaked into {place}");
        }
    }
    // What is stored of an image is its pixel plane, a 16-bit grayscale PNG, and copies of it
    // fitted to models: never the DICOM.
    for (name, bytes) in blobs.iter().filter(|(name, _)| name.contains("planes/")) {
        assert!(!contains(bytes, "DICM"), "{name} is a DICOM");
        if name.ends_with(".fit") {
            xcam_shared::imaging::fitted::decode(bytes).expect("a fitted plane");
        } else {
            xcam_shared::imaging::plane::decode(bytes).expect("a plane");
        }
    }
    let csv_of = |i: usize| {
        haystacks
            .iter()
            .filter(|(n, _)| n == "the CSV")
            .nth(i)
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .unwrap()
    };
    assert!(
        csv_of(0).contains("entry-") && !csv_of(0).contains("Zebulon"),
        "entry names are pseudonymised"
    );
    assert!(csv_of(1).contains("e.dcm"), "names as uploaded otherwise");
    let skipped = |i: usize| {
        let (api, id) = (&api, &batches[i]);
        async move {
            let report = fetch_report(api, id).await;
            assert_eq!(
                report["skipped"].as_array().map(Vec::len),
                Some(1),
                "{report}"
            );
            report["skipped"][0]["entry_name"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let hidden = skipped(0).await;
    assert!(
        hidden.starts_with("entry-"),
        "a skipped entry's name is pseudonymised: {hidden}"
    );
    assert_eq!(skipped(1).await, "f.txt");
    stack.finish().await;
}
