//! The session's progress as the terminal shows it: a bar while profiling, a spinner and one
//! line per accuracy measurement (those take seconds each). Lines still appear when stderr is
//! not a terminal, where indicatif draws nothing.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::session::Progress;

/// Turns [`Progress`] into bars and lines on stderr.
pub struct Bars {
    profile: Option<ProgressBar>,
    spinner: Option<ProgressBar>,
    name: String,
}

impl Bars {
    pub fn new(name: &str) -> Bars {
        Bars {
            profile: None,
            spinner: None,
            name: name.to_string(),
        }
    }

    /// A line above the bars (or on stderr when they are hidden).
    pub fn line(&self, text: &str) {
        match self.spinner.as_ref().or(self.profile.as_ref()) {
            Some(b) if !b.is_hidden() => b.println(text),
            _ => eprintln!("{text}"),
        }
    }

    pub fn show(&mut self, p: Progress) {
        match p {
            Progress::Profiling { done, total } => {
                let bar = self.profile.get_or_insert_with(|| {
                    let b = ProgressBar::new(total as u64).with_style(
                        ProgressStyle::with_template(
                            "profiling {msg} [{bar:30}] {pos}/{len} segment runs",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b.set_message(self.name.clone());
                    b
                });
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            Progress::Profiled { cuts, host_ms } => {
                if let Some(b) = self.profile.take() {
                    b.finish_and_clear();
                }
                self.line(&format!(
                    "profiled {}: {cuts} cut points, {host_ms:.2} ms per image on this machine (sum of segments)",
                    self.name
                ));
            }
            Progress::Oracle { measured_on } => self.line(&format!(
                "live oracle: {} on {} ({} fit, {} eval inputs)",
                self.name, measured_on.calibration, measured_on.fit.count, measured_on.eval.count
            )),
            Progress::Reused { points } => self.line(&format!(
                "reusing {points} accuracy measurements from an earlier run"
            )),
            Progress::Measuring { n, point, samples } => {
                let s = self.spinner.get_or_insert_with(|| {
                    let s = ProgressBar::new_spinner().with_style(
                        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    s.enable_steady_tick(Duration::from_millis(120));
                    s
                });
                s.set_message(match samples {
                    Some(b) => format!(
                        "measuring #{n}: {point}, samples {}..{} of {}",
                        b.from, b.to, b.of
                    ),
                    None => format!("measuring #{n}: {point}"),
                });
            }
            Progress::Measured {
                point,
                accuracy,
                seconds,
                samples: None,
                ..
            } => self.line(&format!(
                "  measured {point}: {:.2}% in {seconds:.1} s",
                accuracy * 100.0
            )),
            Progress::Measured {
                point,
                accuracy,
                seconds,
                samples: Some(b),
                ..
            } => self.line(&format!(
                "  measured {point}: {:.2}% on samples {}..{} of {} in {seconds:.1} s",
                accuracy * 100.0,
                b.from,
                b.to,
                b.of
            )),
        }
    }

    /// Clears the bars, leaving the lines.
    pub fn finish(&mut self) {
        for b in [self.profile.take(), self.spinner.take()]
            .into_iter()
            .flatten()
        {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}
