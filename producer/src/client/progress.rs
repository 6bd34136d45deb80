//! Progress for people at a terminal (bars) and for logs and pipes (plain lines).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display that is a bar on a terminal and occasional plain lines elsewhere.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    last_line: std::time::Instant,
}

impl Progress {
    pub fn bytes(total: u64) -> Self {
        Self::new(
            total,
            "{spinner} uploading [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            "uploaded",
        )
    }

    pub fn items(total: u64) -> Self {
        Self::new(
            total,
            "{spinner} {prefix:>22} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}",
            "processed",
        )
    }

    fn new(total: u64, template: &str, label: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            label,
            last_line: std::time::Instant::now() - std::time::Duration::from_secs(60),
        }
    }

    /// Updates the position; `status` and `note` show beside the bar, or in the plain line.
    pub fn update(&mut self, position: u64, total: u64, status: &str, note: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(position);
                bar.set_prefix(status.to_owned());
                bar.set_message(note.to_owned());
            }
            None if self.last_line.elapsed().as_secs() >= 2 || position == total => {
                eprintln!(
                    "{status}: {position}/{total} {}{}{note}",
                    self.label,
                    if note.is_empty() { "" } else { ", " }
                );
                self.last_line = std::time::Instant::now();
            }
            None => {}
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
