//! Pseudonyms of entry names: HMAC-SHA256 under a server secret (`XCAM_PSEUDONYM_KEY`) of the
//! batch id and the name. Batch ids are public, so a hash salted with them alone could be
//! reversed by trying likely names; without the key nothing can be tried.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The server's pseudonym key. Never printed.
#[derive(Clone)]
pub struct PseudonymKey(Arc<[u8]>);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(…)")
    }
}

impl PseudonymKey {
    /// Shortest accepted key, in bytes: a key must be as hard to guess as the hash is long.
    pub const MIN_BYTES: usize = 32;

    pub fn new(raw: &str) -> Result<Self, String> {
        if raw.len() < Self::MIN_BYTES {
            return Err(format!(
                "XCAM_PSEUDONYM_KEY must be at least {} bytes (e.g. `openssl rand -hex 32`)",
                Self::MIN_BYTES
            ));
        }
        Ok(Self(raw.as_bytes().into()))
    }

    /// The pseudonym of `name` in `batch`: stable within the batch, unlinkable across batches,
    /// irreversible without the key; the extension is kept so the format stays visible.
    pub fn pseudonym(&self, batch: Uuid, name: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(batch.as_bytes());
        mac.update(name.as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        let ext = std::path::Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("img");
        format!("entry-{}.{}", &digest[..24], ext.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_need_the_key_and_stay_within_their_batch() {
        assert!(PseudonymKey::new("short").is_err());
        let key = PseudonymKey::new(&"k".repeat(32)).unwrap();
        let other = PseudonymKey::new(&"j".repeat(32)).unwrap();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let p = key.pseudonym(a, "Doe^John_1970.dcm");
        assert_eq!(p, key.pseudonym(a, "Doe^John_1970.dcm"));
        assert!(p.starts_with("entry-") && p.ends_with(".dcm") && !p.contains("Doe"));
        assert_ne!(p, key.pseudonym(b, "Doe^John_1970.dcm"));
        assert_ne!(p, other.pseudonym(a, "Doe^John_1970.dcm"));
        assert_eq!(format!("{key:?}"), "PseudonymKey(…)");
    }
}
