//! The report: one table per part (measurement, value), the checks that failed, printed and
//! written to `target/reliability/report.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

/// One part's findings.
pub struct Section {
    pub title: String,
    /// How to run this part again.
    pub command: String,
    pub rows: Vec<(String, String)>,
    /// Checks that did not hold; any makes the run fail.
    pub failures: Vec<String>,
}

impl Section {
    pub fn new(title: &str, command: &str) -> Section {
        Section {
            title: title.into(),
            command: command.into(),
            rows: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub fn row(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.rows.push((name.into(), value.into()));
    }

    /// Records a failure unless `ok`.
    pub fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    pub fn markdown(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0)
            .max(11);
        let value_width = self
            .rows
            .iter()
            .map(|(_, v)| v.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n\n`{}`\n", self.title, self.command);
        let _ = writeln!(
            out,
            "| {:width$} | {:value_width$} |",
            "Measurement", "Value"
        );
        let _ = writeln!(
            out,
            "| {} | {} |",
            "-".repeat(width),
            "-".repeat(value_width)
        );
        for (name, value) in &self.rows {
            let _ = writeln!(out, "| {name:width$} | {value:value_width$} |");
        }
        if self.failures.is_empty() {
            let _ = writeln!(out, "\nAll checks held.");
        } else {
            let _ = writeln!(out, "\nFAILED:");
            for failure in &self.failures {
                let _ = writeln!(out, "- {failure}");
            }
        }
        out
    }
}

/// Prints `text` on stdout.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes each part's table to `target/reliability/<part>.md` and all the parts' latest
/// tables to `target/reliability/report.md`; returns the latter.
pub fn write(form: &str, parts: &[(&str, Section)]) -> std::io::Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
    std::fs::create_dir_all(&dir)?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    for (part, section) in parts {
        let text = format!("{}\n({form} form, {profile} build)\n", section.markdown());
        std::fs::write(dir.join(format!("{part}.md")), text)?;
    }
    let mut text = String::from("# Reliability report\n\n");
    for part in crate::PARTS {
        if let Ok(section) = std::fs::read_to_string(dir.join(format!("{part}.md"))) {
            text.push_str(&section);
            text.push('\n');
        }
    }
    let path = dir.join("report.md");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes as MB with one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// Latency samples and their percentiles.
#[derive(Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn add(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (0–100), or zero without samples.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let index = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[index.min(self.0.len() - 1)]
    }

    /// "p50 x / p99 y".
    pub fn summary(&mut self) -> String {
        format!(
            "p50 {} / p99 {}",
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0))
        )
    }
}
