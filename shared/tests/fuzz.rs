//! Property tests over the decoders' input: arbitrary and mutated bytes must end in a clear
//! error or an image, never a panic or an unbounded allocation. `make test` runs a bounded
//! number of cases; `make fuzz` runs many more (PROPTEST_CASES).

use proptest::prelude::*;
use xcam_shared::imaging::{self, ImageLimits};

const DICOM: &[u8] = include_bytes!("fixtures/cr_64.dcm");
const PNG: &[u8] = include_bytes!("fixtures/cr_64.png");

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// `seed` with some bytes overwritten, some cut off.
fn mutated(seed: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(edits, cut)| {
            let mut bytes = seed.to_vec();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes.truncate(cut.index(bytes.len()).max(bytes.len() / 2));
            bytes
        })
}

fn check(bytes: &[u8]) {
    // Production decodes under catch_unwind; here a panic must not even happen.
    match imaging::decode_unguarded(bytes, &ImageLimits::default()) {
        Ok(d) => assert_eq!(
            d.image.pixels.len(),
            (d.image.width * d.image.height) as usize
        ),
        Err(e) => assert!(!e.code().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_dicom_never_panics(bytes in mutated(DICOM)) {
        check(&bytes);
    }

    #[test]
    fn mutated_png_never_panics(bytes in mutated(PNG)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_dicom_preamble_never_panic(tail in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        bytes.extend_from_slice(&tail);
        check(&bytes);
    }
}
