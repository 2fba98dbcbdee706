//! The fuzz targets without a fuzzer: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through the same `outpost::fuzzing` entry point the target
//! calls, so what the fuzzer once found or reached stays fixed. `seeds` (ignored) rewrites the
//! seed inputs from real sources; `fuzz/run.sh` fuzzes from them.

use outpost::fuzzing;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Feeds every input of `target` to `run`; fails naming the inputs that panicked.
fn replay(target: &str, run: impl Fn(&[u8])) {
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            inputs.push(entry.expect("a directory entry").path());
        }
    }
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus for {target}");
    let failed: Vec<_> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("an input");
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:?}");
}

#[test]
fn stream_json() {
    replay("stream_json", fuzzing::stream_json);
}

#[test]
fn x402_header() {
    replay("x402_header", fuzzing::x402_header);
}

#[test]
fn voice_text() {
    replay("voice_text", fuzzing::voice_text);
}

#[test]
fn voice_opus() {
    replay("voice_opus", fuzzing::voice_opus);
}

#[test]
fn config() {
    replay("config", fuzzing::config);
}

#[test]
fn http_request() {
    let target = fuzzing::HttpTarget::start();
    replay("http_request", |data| target.request(data));
}

/// The seed inputs, from real sources: the engine fixtures' output, the spec's x402 test
/// vector, libopus packets of espeak-ng speech, the shipped config files and the API
/// document's example bodies. Run with `--ignored` to rewrite `fuzz/corpus/*/seed-*`.
#[test]
#[ignore = "writes the seed corpus"]
fn seeds() {
    seeds::write_all(&fuzz_dir().join("corpus"));
}

mod seeds;
