//! The one markdown table the bench prints, and the cell formats it uses.

use std::fmt::Write;
use std::time::Duration;

/// One row of the table; empty strings leave a cell blank.
pub struct Row {
    pub name: String,
    pub rate: String,
    pub p50: String,
    pub p99: String,
    pub of_ceiling: String,
    pub target: String,
    /// `None` when the row has no target.
    pub met: Option<bool>,
}

impl Row {
    /// A row with only a name; fill in the cells that apply.
    pub fn named(name: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            rate: String::new(),
            p50: String::new(),
            p99: String::new(),
            of_ceiling: String::new(),
            target: String::new(),
            met: None,
        }
    }
}

/// A latency in milliseconds with three decimals.
pub fn ms(latency: Duration) -> String {
    format!("{:.3} ms", latency.as_secs_f64() * 1000.0)
}

/// A rate with a thousands separator and its unit.
pub fn per_second(rate: f64, unit: &str) -> String {
    format!("{} {unit}", grouped(rate.round() as u64))
}

/// A whole number with thousands separators: `12,345`.
pub fn grouped(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (idx, digit) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// KiB as MB (MiB, as `ps` and `top` count) with one decimal.
pub fn megabytes(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

/// Renders the rows as one markdown table with aligned columns.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "Measurement",
        "Rate",
        "p50",
        "p99",
        "% of ceiling",
        "Target",
        "Met",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            let met = match row.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            [
                row.name.clone(),
                row.rate.clone(),
                row.p50.clone(),
                row.p99.clone(),
                row.of_ceiling.clone(),
                row.target.clone(),
                met.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    push_line(&mut out, &header.map(str::to_string), &widths);
    let rule = widths.map(|w| "-".repeat(w));
    push_line(&mut out, &rule, &widths);
    for line in &cells {
        push_line(&mut out, line, &widths);
    }
    out
}

fn push_line(out: &mut String, cells: &[String; 7], widths: &[usize; 7]) {
    out.push('|');
    for (cell, width) in cells.iter().zip(widths) {
        let pad = width - cell.chars().count();
        let _ = write!(out, " {cell}{} |", " ".repeat(pad));
    }
    out.push('\n');
}
