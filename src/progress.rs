//! What the user sees while a run goes on: one indicatif bar per running stage on a terminal; plain
//! lines on stderr otherwise (no bars when stdout is not a terminal).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use wspace_stage_api::Progress;

pub struct Ui {
    multi: Option<MultiProgress>,
    /// No lines at all (`--dry-run`, `status`, `explain`: they only report).
    quiet: bool,
}

impl Ui {
    /// Bars when stdout is a terminal, lines on stderr otherwise; `quiet` silences the lines.
    pub fn new(quiet: bool) -> Ui {
        let multi = std::io::stdout().is_terminal().then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Ui { multi, quiet }
    }

    /// A line for the user (above the bars on a terminal).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// The handle a stage reports through.
    pub fn stage_bar(&self, stage: &str) -> StageBar {
        let bar = match &self.multi {
            Some(m) => {
                let b = m.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {msg}")
                        .unwrap_or(ProgressStyle::default_spinner()),
                );
                b.enable_steady_tick(Duration::from_millis(120));
                b
            }
            None => ProgressBar::hidden(),
        };
        bar.set_prefix(stage.to_string());
        StageBar { bar }
    }
}

pub struct StageBar {
    bar: ProgressBar,
}

impl Progress for StageBar {
    fn start(&self, total: u64, unit: &str) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        let template =
            format!("{{spinner}} {{prefix:.bold}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed}} (eta {{eta}}) {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
    }
    fn inc(&self, n: u64) {
        self.bar.inc(n);
    }
    fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }
}

impl Drop for StageBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
