//! Reliability of the daemon as a child process, built from this crate: a crash loop
//! (`kill -9` amid mixed load, restart, check every acknowledged write), sustained load, slow
//! and hostile clients, and a login flood. `cargo test` runs the short form (a few minutes in
//! a debug build); `OUTPOST_RELIABILITY=long cargo test --release --test reliability` the long
//! one. Name parts to run only those (`-- crash_loop sustained_load hostile_clients
//! login_flood`). Each part prints its table; together they are written to
//! `target/reliability/report.md`.

mod client;
mod crash;
mod daemon;
mod hostile;
mod load;
mod login;
#[allow(dead_code)]
#[path = "../it/paid/payer.rs"]
mod payer;
mod report;
mod slow_peers;
#[allow(dead_code)]
#[path = "../it/paid/stub.rs"]
mod stub;

use report::Section;
use std::process::ExitCode;

pub const PARTS: [&str; 4] = [
    "crash_loop",
    "sustained_load",
    "hostile_clients",
    "login_flood",
];

fn main() -> ExitCode {
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // `cargo test -- --list`: nothing to list, the parts are not unit tests.
            "--list" => return ExitCode::SUCCESS,
            "--skip" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    let long = std::env::var("OUTPOST_RELIABILITY").is_ok_and(|v| v == "long");
    let chosen: Vec<&str> = PARTS
        .into_iter()
        .filter(|part| filters.is_empty() || filters.iter().any(|f| part.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let form = if long { "long" } else { "short" };
    let mut sections: Vec<(&str, Section)> = Vec::new();
    for part in chosen {
        report::print(&format!("reliability: {part} ({form} form)…\n"));
        let section = runtime.block_on(async {
            match part {
                "crash_loop" => crash::run(long).await,
                "sustained_load" => load::run(long).await,
                "login_flood" => login::run(long).await,
                _ => hostile::run(long).await,
            }
        });
        report::print(&format!("{}\n", section.markdown()));
        sections.push((part, section));
    }
    match report::write(form, &sections) {
        Ok(path) => report::print(&format!("report: {}\n", path.display())),
        Err(err) => report::print(&format!("report not written: {err}\n")),
    }
    if sections.iter().all(|(_, s)| s.failures.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
