//! Checks on the tree itself: every source file says what it is, the documented
//! configuration file is exactly the built-in defaults, and the absences ARCHITECTURE.md
//! marks "(tidy)" hold: each rule below reads every file under `src/` and fails with the
//! rule, its because and the list of offenders. Among them: no circle among the files'
//! imports (beyond the known ones, a list that only shrinks). That the route table and
//! `openapi.json` list the same routes is checked beside the table, in
//! `api/openapi_check.rs`.
//!
//! The rules read code, not comments: a line whose first characters are `//` is skipped, so
//! docs may name what the code must not. These files themselves are not read (they name
//! every pattern they look for). The import graph and its circles are in `imports.rs`.

mod imports;

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A source file under `src/`: its path from the crate root (`src/chat.rs`) and its code
/// lines (number, text), comment lines left out.
struct Source {
    path: String,
    lines: Vec<(usize, String)>,
}

impl Source {
    /// True when the file is `room` or lies under the directory of that name (`src/store`
    /// holds `src/store.rs` and `src/store/...`).
    fn is_in(&self, room: &str) -> bool {
        let path = self.path.as_str();
        path == format!("{room}.rs") || path.starts_with(&format!("{room}/")) || path == room
    }
}

/// Every file under `src/` except these checks' own.
fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .iter()
        .map(|file| {
            let path = file.strip_prefix(root).unwrap().display().to_string();
            let text = std::fs::read_to_string(file).unwrap();
            let lines = text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim_start().starts_with("//"))
                .map(|(n, line)| (n + 1, line.to_string()))
                .collect();
            Source { path, lines }
        })
        .filter(|source| !source.is_in("src/tidy"))
        .collect()
}

/// `path:line: text` of every code line outside `rooms` for which `offends` holds.
fn offenders(rooms: &[&str], offends: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for source in sources() {
        if rooms.iter().any(|room| source.is_in(room)) {
            continue;
        }
        for (number, line) in &source.lines {
            if offends(line) {
                found.push(format!("{}:{number}: {}", source.path, line.trim()));
            }
        }
    }
    found
}

/// True when `name` occurs in `line` as a path root or a `use` of its own: not preceded by an
/// identifier character or `::` (`opus::` is the crate, `voice::opus::` is the module).
fn names_crate(line: &str, name: &str) -> bool {
    let path = format!("{name}::");
    let mut rest = line;
    let mut offset = 0;
    while let Some(at) = rest.find(&path) {
        let start = offset + at;
        let before = &line[..start];
        let joined = before.ends_with("::")
            || before
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !joined {
            return true;
        }
        offset = start + path.len();
        rest = &line[offset..];
    }
    let line = line.trim_start();
    line.starts_with(&format!("use {name};")) || line.starts_with(&format!("use {name} "))
}

/// True when `word` occurs in `line` as a whole identifier (`Session`, not `SessionEnd`).
fn names_word(line: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().last();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Fails with the rule, its because and the offenders, unless there are none.
fn assert_none(rule: &str, because: &str, found: Vec<String>) {
    assert!(
        found.is_empty(),
        "{rule}, because {because}; offenders:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        if root.join(dir).exists() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!") && !text.trim_start().starts_with("#![")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert_none(
        "every source file opens with a //! module doc",
        "a reader learns what a file is and why before reading it",
        missing,
    );
}

#[test]
fn the_documented_config_is_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/outpost.toml");
    let raw = crate::config::read_file(&path).unwrap();
    let documented = crate::config::Config::from_raw(raw).unwrap();
    assert_eq!(
        documented,
        crate::config::Config::default(),
        "config/outpost.toml is the built-in defaults, because an operator reads it to learn \
         what an empty config does"
    );
}

/// No file outside `store` names redb: because the file format, its tables and its
/// transactions stay in one place, so a schema change or a redb upgrade touches one module,
/// and no caller can hold a transaction across an `.await`.
#[test]
fn only_the_store_names_redb() {
    assert_none(
        "no file outside src/store names redb",
        "the file format, its tables and transactions stay in one place, and no caller can hold \
         a transaction across an .await",
        offenders(&["src/store"], |line| names_crate(line, "redb")),
    );
}

/// No file outside `voice/opus.rs` names the `opus` crate, and nothing names `audiopus`:
/// because libopus is C behind one small safe wrapper, and two bindings of it linked side by
/// side would clash on its symbols.
#[test]
fn only_voice_opus_names_libopus() {
    assert_none(
        "no file outside src/voice/opus.rs names the opus crate or audiopus",
        "libopus is C behind one small safe wrapper, and two bindings linked side by side clash",
        offenders(&["src/voice/opus.rs"], |line| {
            names_crate(line, "opus") || line.contains("audiopus")
        }),
    );
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"));
    let linked: Vec<String> = lock
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("name = \"audiopus"))
        .map(str::to_string)
        .collect();
    assert_none(
        "audiopus is not linked",
        "two bindings of libopus linked side by side clash on its symbols",
        linked,
    );
}

/// What serves HTTP: hyper's and hyper-util's server modules, the service adapter, and a
/// request whose body is hyper's `Incoming` (a client's `Incoming` is a *response* body and
/// may appear anywhere).
const HYPER_SERVER: &[&str] = &[
    "hyper::server",
    "hyper_util::server",
    "service_fn",
    "server::conn",
    "Request<Incoming>",
    "Request<hyper::body::Incoming>",
];

/// No file outside `server` and `api` names hyper server types: because every service stays
/// callable without a socket (tests, fuzz targets, the control socket), and a transport
/// change touches two modules.
#[test]
fn only_server_and_api_name_hyper_server_types() {
    assert_none(
        "no file outside src/server and src/api names hyper server types",
        "every service stays callable without a socket, and a transport change touches two modules",
        offenders(&["src/server", "src/api"], |line| {
            HYPER_SERVER.iter().any(|pattern| line.contains(pattern))
        }),
    );
}

/// What engines must not import: storage, routing, chat sessions, HTTP bodies.
const ENGINE_FORBIDDEN: &[&str] = &[
    "crate::store",
    "crate::api",
    "crate::chat",
    "crate::body",
    "crate::executions",
];

/// No engine imports the store, the API, chat or HTTP bodies, or names `Session`: because an
/// engine is a turn in and events out, so it can be tested alone and a new one needs to know
/// nothing of how turns are kept or served.
#[test]
fn engines_know_nothing_of_sessions_http_or_storage() {
    let found: Vec<String> = offenders(&[], |line| {
        ENGINE_FORBIDDEN.iter().any(|p| line.contains(p)) || names_word(line, "Session")
    })
    .into_iter()
    .filter(|offender| offender.starts_with("src/engines"))
    .collect();
    assert_none(
        "no engine imports the store, the API, chat or HTTP bodies, or names Session",
        "an engine is a turn in and events out, testable alone, knowing nothing of how turns are \
         kept or served",
        found,
    );
}

/// systemd's variables.
const SYSTEMD_VARIABLES: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "LISTEN_FDS",
    "JOURNAL_STREAM",
];

/// No file outside `service` reads systemd's variables: because the library runs the same
/// with or without systemd, and the tests never have to set them.
#[test]
fn only_service_reads_systemd_variables() {
    assert_none(
        "no file outside src/service reads systemd's variables",
        "the library runs the same with or without systemd, and tests never set them",
        offenders(&["src/service"], |line| {
            SYSTEMD_VARIABLES.iter().any(|name| line.contains(name))
        }),
    );
}

/// The statics allowed to fill once, each with its reason. Each is written once with a value
/// that does not depend on configuration, and never changes after.
const ONCE_STATICS: &[(&str, &str, &str)] = &[
    (
        "src/users.rs",
        "DECOY",
        "the hash of a fixed decoy password, so an unknown name costs a login what a known one does",
    ),
    (
        "src/outbound/connect.rs",
        "SYSTEM",
        "the system's root certificates, read once per process",
    ),
    (
        "src/fuzzing.rs",
        "OFFER",
        "a fuzz target's fixed offer: one per process, as the fuzzer runs one",
    ),
    (
        "src/fuzzing/http.rs",
        "TARGET",
        "a fuzz target's daemon: one per process, as the fuzzer runs one",
    ),
];

/// What makes a static mutable.
const MUTABLE: &[&str] = &[
    "static mut",
    "Mutex",
    "RwLock",
    "Atomic",
    "Cell",
    "OnceLock",
    "LazyLock",
    "OnceCell",
    "Lazy<",
    "thread_local!",
    "lazy_static!",
];

/// No global mutable state outside [`ONCE_STATICS`]: because configuration and services are
/// passed in (`App`), two daemons run side by side in one test process, and a reload cannot
/// miss a copy kept in a static.
#[test]
fn no_global_mutable_state() {
    let found: Vec<String> = offenders(&[], |line| {
        let trimmed = line.trim_start();
        let is_static = trimmed.starts_with("static ")
            || trimmed.starts_with("pub static ")
            || trimmed.starts_with("pub(crate) static ")
            || trimmed.starts_with("thread_local!")
            || trimmed.starts_with("lazy_static!");
        is_static && MUTABLE.iter().any(|m| line.contains(m))
    })
    .into_iter()
    .filter(|offender| {
        !ONCE_STATICS.iter().any(|(path, name, _)| {
            offender.starts_with(&format!("{path}:")) && names_word(offender, name)
        })
    })
    .collect();
    assert_none(
        "no static holds mutable state beyond ONCE_STATICS",
        "configuration and services are passed in, two daemons run in one process, and a reload \
         cannot miss a copy kept in a static",
        found,
    );
}

#[test]
fn the_rules_read_code_as_meant() {
    assert!(names_crate("use redb::Database;", "redb"));
    assert!(names_crate(
        "    let db = redb::Database::create(path)?;",
        "redb"
    ));
    assert!(!names_crate("let copy = \"backup.redb\";", "redb"));
    assert!(names_crate("use opus::Decoder;", "opus"));
    assert!(!names_crate("use super::opus::{Decoder, Encoder};", "opus"));
    assert!(!names_crate("use crate::voice::opus::Decoder;", "opus"));
    assert!(names_word("fn f(s: &Session) {}", "Session"));
    assert!(!names_word("use crate::auth::SessionEnd;", "Session"));
}
