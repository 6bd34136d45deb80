//! The status machines of batches, items and inference-log rows, as types.
//!
//! The columns are `text` with CHECK constraints (see the first migration); these enums are the
//! one place the values are spelt in Rust, and the one place that says which are terminal.

/// Declares an enum stored as snake_case text (sqlx), spelt the same in JSON and in the
/// document, with `ALL`, `as_str`, `Display` and a strict `FromStr`.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as stored and as the API spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                        format!("{s:?} is not one of {}", all.join(", "))
                    })
            }
        }
    };
}
pub(crate) use text_enum;

/// Declares a status enum (a [`text_enum!`]) with its terminal subset.
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }
        terminal: [$($terminal:ident),+]
    ) => {
        text_enum! {
            $(#[$meta])*
            $name { $($(#[$vmeta])* $variant = $text),+ }
        }

        impl $name {
            /// The values no transition leaves.
            pub const TERMINAL: &'static [$name] = &[$($name::$terminal),+];

            /// No transition leaves this status.
            pub fn is_terminal(self) -> bool {
                Self::TERMINAL.contains(&self)
            }
        }
    };
}

status_enum! {
    /// Where a batch is. It follows its items (`db::batches::refresh`).
    BatchStatus {
        /// The archive is being stored and checked.
        Ingesting = "ingesting",
        /// Every item waits for a worker.
        Queued = "queued",
        /// Some item has started and some is still open.
        Running = "running",
        /// Every item succeeded.
        Succeeded = "succeeded",
        /// Every item ended, some did not succeed.
        CompletedWithErrors = "completed_with_errors",
        /// No item succeeded, or the archive could not be ingested.
        Failed = "failed",
        /// Cancelled by a user: queued items will not run.
        Cancelled = "cancelled",
    }
    terminal: [Succeeded, CompletedWithErrors, Failed, Cancelled]
}

status_enum! {
    /// Where one archive entry is: queued → running → succeeded | failed, queued → cancelled,
    /// or rejected at ingestion.
    ItemStatus {
        /// Refused at ingestion, with a code.
        Rejected = "rejected",
        /// Waiting for a worker.
        Queued = "queued",
        /// Claimed by a worker.
        Running = "running",
        /// Explained; its result exists.
        Succeeded = "succeeded",
        /// Failed permanently, with a code.
        Failed = "failed",
        /// Its batch was cancelled before it ran.
        Cancelled = "cancelled",
    }
    terminal: [Rejected, Succeeded, Failed, Cancelled]
}

status_enum! {
    /// How one attempt ended, in the inference log.
    LogStatus {
        /// The item succeeded.
        Succeeded = "succeeded",
        /// The item failed for good.
        Failed = "failed",
        /// The attempt failed and the queue will try again.
        Retrying = "retrying",
    }
    terminal: [Succeeded, Failed]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_are_exactly_those_no_transition_leaves() {
        assert_eq!(
            BatchStatus::TERMINAL,
            [
                BatchStatus::Succeeded,
                BatchStatus::CompletedWithErrors,
                BatchStatus::Failed,
                BatchStatus::Cancelled
            ]
        );
        assert!(!ItemStatus::Queued.is_terminal() && ItemStatus::Rejected.is_terminal());
        assert!(!LogStatus::Retrying.is_terminal());
    }

    #[test]
    fn text_form_round_trips_through_display_serde_and_from_str() {
        for s in BatchStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(s.as_str().parse::<BatchStatus>().unwrap(), *s);
        }
        assert!("done".parse::<ItemStatus>().is_err());
    }
}
