//! What the user sees while a run goes on: one indicatif bar per running stage when stdout is a
//! terminal; otherwise (output to a file or a pipe) plain progress lines on stderr.
//!
//! # Off a terminal
//! A stage that declares its amount of work ([`Progress::start`]) gets a [`LineProgress`]: a line such as
//! `zoo: 410/1000 models, 10m12s, eta 14m40s` whenever both [`LINE_FRACTION`] (10 %) of the work and
//! [`LINE_INTERVAL`] (30 s) have passed since the last line — every 10 % or every 30 s, whichever comes
//! later — so a 25-minute zoo prints about ten lines and a 10-second stage none. The ETA is the elapsed
//! time scaled by the work left (`elapsed × (total − done) / done`). `-q` silences these lines and the
//! `▸`/`✓` lines; the summary table still prints.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use wspace_stage_api::Progress;

/// Least progress between two lines off a terminal (a fraction of the total).
pub const LINE_FRACTION: f64 = 0.1;
/// Least time between two lines off a terminal.
pub const LINE_INTERVAL: Duration = Duration::from_secs(30);

pub struct Ui {
    multi: Option<MultiProgress>,
    /// No lines at all (`-q`, `--dry-run`, `status`, `explain`: they only report).
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
        let lines = (self.multi.is_none() && !self.quiet).then(|| {
            let started = Instant::now();
            LineProgress::new(stage, Box::new(move || started.elapsed()), Box::new(|l: &str| eprintln!("{l}")))
        });
        StageBar { bar, lines }
    }
}

pub struct StageBar {
    bar: ProgressBar,
    lines: Option<LineProgress>,
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
        if let Some(l) = &self.lines {
            l.start(total, unit);
        }
    }
    fn inc(&self, n: u64) {
        self.bar.inc(n);
        if let Some(l) = &self.lines {
            l.inc(n);
        }
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

/// The time since the stage started (injectable for tests).
pub type Clock = Box<dyn Fn() -> Duration + Send + Sync>;
/// Where the lines go (stderr; a vector in tests).
pub type Sink = Box<dyn Fn(&str) + Send + Sync>;

struct LineState {
    total: u64,
    unit: String,
    done: u64,
    /// Progress and time at the last line (or at `start`).
    last_done: u64,
    last_at: Duration,
}

/// Progress as plain lines: see the [module doc](self).
pub struct LineProgress {
    stage: String,
    clock: Clock,
    sink: Sink,
    state: Mutex<LineState>,
}

impl LineProgress {
    pub fn new(stage: &str, clock: Clock, sink: Sink) -> LineProgress {
        let state = LineState { total: 0, unit: String::new(), done: 0, last_done: 0, last_at: Duration::ZERO };
        LineProgress { stage: stage.to_string(), clock, sink, state: Mutex::new(state) }
    }
}

/// `10m12s`, `1h02m`, `45s`.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl Progress for LineProgress {
    fn start(&self, total: u64, unit: &str) {
        let now = (self.clock)();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = LineState { total, unit: unit.to_string(), done: 0, last_done: 0, last_at: now };
    }
    fn inc(&self, n: u64) {
        let now = (self.clock)();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done = s.done.saturating_add(n);
        if s.total == 0 {
            return;
        }
        let step = (s.done - s.last_done) as f64 / s.total as f64;
        if step + 1e-9 < LINE_FRACTION || now.saturating_sub(s.last_at) < LINE_INTERVAL {
            return;
        }
        s.last_done = s.done;
        s.last_at = now;
        let eta = if s.done > 0 && s.done < s.total {
            format!(", eta {}", duration_text(now.mul_f64((s.total - s.done) as f64 / s.done as f64)))
        } else {
            String::new()
        };
        (self.sink)(&format!("{}: {}/{} {}, {}{eta}", self.stage, s.done, s.total, s.unit, duration_text(now)));
    }
    fn message(&self, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type Shared<T> = Arc<Mutex<T>>;

    /// A clock the test moves, and the lines printed.
    fn fixture() -> (LineProgress, Shared<Duration>, Shared<Vec<String>>) {
        let now = Arc::new(Mutex::new(Duration::ZERO));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (n, l) = (now.clone(), lines.clone());
        let p = LineProgress::new(
            "zoo",
            Box::new(move || *n.lock().unwrap()),
            Box::new(move |s: &str| l.lock().unwrap().push(s.into())),
        );
        (p, now, lines)
    }

    #[test]
    fn lines_come_every_ten_percent_or_thirty_seconds_whichever_is_later() {
        let (p, now, lines) = fixture();
        p.start(1000, "models");
        // Fast work: 10 % every second → a line only every 30 s.
        for sec in 1..=40u64 {
            *now.lock().unwrap() = Duration::from_secs(sec);
            p.inc(25);
        }
        assert_eq!(*lines.lock().unwrap(), ["zoo: 750/1000 models, 30s, eta 10s"]);
        // Slow work: 1 % every 10 s → a line only every 10 % (100 s).
        lines.lock().unwrap().clear();
        p.start(100, "models");
        for i in 1..=25u64 {
            *now.lock().unwrap() = Duration::from_secs(40 + 10 * i);
            p.inc(1);
        }
        assert_eq!(*lines.lock().unwrap(), ["zoo: 10/100 models, 2m20s, eta 21m00s", "zoo: 20/100 models, 4m00s, eta 16m00s"]);
    }

    #[test]
    fn the_last_line_has_no_eta_and_nothing_without_a_total() {
        let (p, now, lines) = fixture();
        p.inc(5);
        *now.lock().unwrap() = Duration::from_secs(3700);
        p.inc(5);
        assert!(lines.lock().unwrap().is_empty(), "no total, no line");
        p.start(4, "epochs");
        *now.lock().unwrap() = Duration::from_secs(7400);
        p.inc(4);
        assert_eq!(*lines.lock().unwrap(), ["zoo: 4/4 epochs, 2h03m"]);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(Duration::from_secs(45)), "45s");
        assert_eq!(duration_text(Duration::from_secs(612)), "10m12s");
        assert_eq!(duration_text(Duration::from_secs(3720)), "1h02m");
    }
}
