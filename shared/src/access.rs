//! Who may do what: roles, the actions the audit trail names, and the secrets behind tokens and
//! sessions.

use sha2::{Digest, Sha256};

use crate::status::text_enum;

text_enum! {
    /// What a token may do. Each role includes the one before it, except that operators see the
    /// fleet across projects but never an image, overlay or map.
    Role {
        /// Reads batches, results, reports, images, overlays and maps of its projects.
        Viewer = "viewer",
        /// A viewer that also uploads, cancels and deletes in its projects.
        Submitter = "submitter",
        /// The fleet across projects: inference log, stats, workers, metrics, cancel.
        Operator = "operator",
        /// Everything, including tokens, projects and the audit log.
        Admin = "admin",
    }
}

impl Role {
    /// Whether a token of this role may cover every project (no `--project`).
    pub fn may_span_projects(self) -> bool {
        matches!(self, Role::Operator | Role::Admin)
    }
}

text_enum! {
    /// What an audit row records someone doing (or trying to).
    Action {
        /// `POST /v1/batches`.
        Upload = "upload",
        /// `POST /v1/batches/{id}/cancel`.
        Cancel = "cancel",
        /// `POST /v1/batches/{id}/retry` (a dry run included).
        Retry = "retry",
        /// `DELETE /v1/batches/{id}`, or retention expiring a batch.
        Delete = "delete",
        /// Listing batches.
        ListBatches = "list_batches",
        /// A batch's status.
        ReadBatch = "read_batch",
        /// A page of a batch's results.
        ReadResults = "read_results",
        /// A batch's CSV report.
        ReadCsv = "read_csv",
        /// A batch's validation report.
        ReadReport = "read_report",
        /// An item's original image.
        ReadImage = "read_image",
        /// An item's overlay.
        ReadOverlay = "read_overlay",
        /// An item's map.
        ReadMap = "read_map",
        /// The inference log.
        QueryLog = "query_log",
        /// Inference statistics.
        QueryStats = "query_stats",
        /// The model catalogue.
        ListModels = "list_models",
        /// The live workers.
        ListWorkers = "list_workers",
        /// Prometheus metrics.
        ReadMetrics = "read_metrics",
        /// The audit trail itself.
        ReadAudit = "read_audit",
        /// Who the caller is.
        ReadSession = "read_session",
        /// Dashboard sign-in.
        SignIn = "sign_in",
        /// Dashboard sign-out.
        SignOut = "sign_out",
        /// `xcam project create`.
        CreateProject = "create_project",
        /// `xcam project retention`.
        SetRetention = "set_retention",
        /// `xcam project faithfulness`.
        SetFaithfulness = "set_faithfulness",
        /// `xcam token create`.
        CreateToken = "create_token",
        /// `xcam token revoke`.
        RevokeToken = "revoke_token",
    }
}

impl Action {
    /// Whether a successful request of this kind leaves an audit row. Refused and failed
    /// requests always do; status polls, catalogue and fleet views would only drown the rest.
    pub fn audited_when_ok(self) -> bool {
        !matches!(
            self,
            Action::ListBatches
                | Action::ReadBatch
                | Action::ListModels
                | Action::ListWorkers
                | Action::ReadMetrics
                | Action::ReadSession
        )
    }
}

text_enum! {
    /// How an audited request ended.
    Outcome {
        /// Done.
        Ok = "ok",
        /// No valid credentials (401), or the role or origin may not (403).
        Denied = "denied",
        /// What it named does not exist for this caller (404).
        NotFound = "not_found",
        /// Any other refusal of the request itself (4xx).
        Refused = "refused",
        /// The server could not do it (5xx).
        Failed = "failed",
    }
}

impl Outcome {
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=399 => Outcome::Ok,
            401 | 403 => Outcome::Denied,
            404 => Outcome::NotFound,
            400..=499 => Outcome::Refused,
            _ => Outcome::Failed,
        }
    }
}

/// Prefix of every token, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "xcam_";

/// A fresh secret: 256 random bits, hex, after `prefix`.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// What is stored of a secret: its SHA-256. The secrets are 256 random bits, so a fast hash
/// is enough; nothing can be guessed from it.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Project names: lower-case letters, digits, `_` and `-`, at most 63, starting with a letter
/// or digit (the schema checks the same).
pub fn check_project_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    ok.then_some(()).ok_or_else(|| {
        format!("project name {name:?}: use 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit")
    })
}

/// Token names: letters, digits, `.`, `_`, `@` and `-`, at most 64, starting with a letter
/// or digit (the schema checks the same).
pub fn check_token_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    ok.then_some(()).ok_or_else(|| {
        format!("token name {name:?}: use 1 to 64 of A-Z, a-z, 0-9, ., _, @ and -, starting with a letter or digit")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bits_and_distinct() {
        let a = new_secret(TOKEN_PREFIX);
        let b = new_secret(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(secret_hash(&a).len(), 32);
    }

    #[test]
    fn names_follow_their_rules() {
        assert!(check_project_name("radiology-2").is_ok());
        for bad in ["", "Upper", "-lead", "sp ace", &"x".repeat(64)] {
            assert!(check_project_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_token_name("ci.bot@ward-3").is_ok());
        assert!(check_token_name("a/b").is_err());
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(Outcome::of_status(202), Outcome::Ok);
        assert_eq!(Outcome::of_status(401), Outcome::Denied);
        assert_eq!(Outcome::of_status(403), Outcome::Denied);
        assert_eq!(Outcome::of_status(404), Outcome::NotFound);
        assert_eq!(Outcome::of_status(422), Outcome::Refused);
        assert_eq!(Outcome::of_status(503), Outcome::Failed);
    }
}
