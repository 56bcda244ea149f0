//! Progress display for long work: one bar per table or model, drawn on
//! stderr only when it is a terminal (indicatif hides itself otherwise, so
//! logs and CI output stay clean).

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A group of progress bars.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
}

impl Progress {
    /// Bars on stderr (hidden when stderr is not a terminal).
    pub fn stderr() -> Progress {
        Progress { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()) }
    }

    /// Bars drawn nowhere (tests, `--quiet`).
    pub fn hidden() -> Progress {
        Progress { multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()) }
    }

    /// A bar counting `unit`s towards `total` (0 = unknown yet).
    pub fn bar(&self, label: &str, total: u64, unit: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(&format!(
            "{{spinner:.green}} {label:<24} [{{bar:30.cyan/blue}}] {{human_pos}}/{{human_len}} {unit} {{per_sec}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = self.multi.add(ProgressBar::new(total).with_style(style));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A spinner for work of unknown length.
    pub fn spinner(&self, label: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(&format!("{{spinner:.green}} {label:<24} {{human_pos}} {{msg}} ({{elapsed}})"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}
