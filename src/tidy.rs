//! Checks on the tree itself: every source file says what it is, the documented
//! configuration file is exactly the built-in defaults, and the absences ARCHITECTURE.md
//! marks "(tidy)" hold: each rule below reads every file under `src/` and fails with the
//! rule, its because and the list of offenders. Among them: no circle among the files'
//! imports (beyond the known ones, a list that only shrinks). That the route table and
//! `openapi.json` list the same routes is checked beside the table, in
//! `api/openapi_check.rs`.
//!
//! The rules read code, not comments: a line whose first characters are `//` is skipped, so
//! docs may name what the code must not. This file itself is not read (it names every
//! pattern it looks for).

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

/// Every file under `src/` except this one.
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
        .filter(|source| source.path != "src/tidy.rs")
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
        "src/outbound.rs",
        "SHARED",
        "the outbound client for URLs of the configuration file, one pool per process",
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

/// The circles among `src/` files' imports that exist today, each as the files it passes
/// through, from its first file in sorted order. This list must only shrink: a change may
/// break a circle here (and then deletes its entry, which the test asks for), never add one.
const KNOWN_CIRCLES: &[&[&str]] = &[];

/// A file's module path: `src/http/body.rs` is `http::body`, `src/lib.rs` the crate root.
/// `src/main.rs` is another crate (the binary) and has none.
fn module_path(file: &str) -> Option<Vec<String>> {
    let rest = file.strip_prefix("src/")?.strip_suffix(".rs")?;
    match rest {
        "lib" => Some(Vec::new()),
        "main" => None,
        _ => {
            let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
            if parts.last().is_some_and(|last| last == "mod") {
                parts.pop();
            }
            Some(parts)
        }
    }
}

/// Every path of the tree starting at `at` in `text` (`a::b::{c, d::e}` gives `a::b::c` and
/// `a::b::d::e`), each as its segments after `prefix`.
fn path_tree(text: &str, mut at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let bytes = text.as_bytes();
    let skip_space = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        at
    };
    let mut path = prefix;
    loop {
        at = skip_space(at);
        if bytes.get(at) == Some(&b'{') {
            at += 1;
            loop {
                path_tree(text, at, path.clone(), out);
                // Skip the item just read, nested groups and all, to the next `,` or `}`.
                let mut depth = 0;
                while at < bytes.len() {
                    match bytes[at] {
                        b'{' => depth += 1,
                        b'}' if depth == 0 => return,
                        b'}' => depth -= 1,
                        b',' if depth == 0 => break,
                        _ => {}
                    }
                    at += 1;
                }
                at += 1;
                if skip_space(at) >= bytes.len() || bytes[skip_space(at)] == b'}' {
                    return;
                }
            }
        }
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        let segment = &text[start..at];
        if !segment.is_empty() && segment != "self" {
            path.push(segment.to_string());
        }
        if segment.is_empty() || !text[at..].starts_with("::") {
            out.push(path);
            return;
        }
        at += 2;
    }
}

/// Where `name::` starts a path in `text`: not joined to an identifier, `::` or `$` before it.
fn path_roots(text: &str, name: &str) -> Vec<usize> {
    let joined = |c: char| c.is_alphanumeric() || c == '_' || c == ':' || c == '$';
    text.match_indices(&format!("{name}::"))
        .map(|(at, _)| at)
        .filter(|&at| !text[..at].chars().last().is_some_and(joined))
        .collect()
}

/// One file's code as the import rules read it: its lines joined, trailing comments cut, and
/// for each line the inline module (`mod tests {`) it lies in, if any.
struct Code {
    text: String,
    /// (byte offset where the line starts, line number, inline module)
    lines: Vec<(usize, usize, Option<String>)>,
}

impl Code {
    fn of(source: &Source) -> Code {
        let mut text = String::new();
        let mut lines = Vec::new();
        let mut inline: Option<String> = None;
        for (number, line) in &source.lines {
            let code = line.split(" // ").next().unwrap_or_default();
            let opened = code
                .strip_prefix("pub mod ")
                .or_else(|| code.strip_prefix("mod "))
                .and_then(|rest| rest.strip_suffix(" {"));
            if let Some(name) = opened {
                inline = Some(name.to_string());
            }
            lines.push((text.len(), *number, inline.clone()));
            if code == "}" {
                inline = None;
            }
            text.push_str(code);
            text.push('\n');
        }
        Code { text, lines }
    }

    /// The line number and inline module at byte `at`.
    fn line_at(&self, at: usize) -> (usize, Option<String>) {
        let index = self.lines.partition_point(|(start, _, _)| *start <= at) - 1;
        (self.lines[index].1, self.lines[index].2.clone())
    }
}

/// The import graph among `src/` files: an edge from each file to every file one of its
/// paths (`crate::`, `super::`, `self::`, or a child module's name) names, with the first line
/// that does. A path names the file of its longest prefix that is a file's module, so
/// `crate::http::body::json` names `src/http/body.rs`. A `mod` declaration is no edge, and a
/// file naming one of its ancestors (its parent module's file, up to `src/lib.rs`) is none
/// either: a parent declares and re-exports its children, and a child builds on its parent,
/// which is one module and not a circle. A parent naming its child is an edge like any other,
/// so a circle that leaves the parent's tree and comes back is one.
fn import_graph() -> std::collections::BTreeMap<(String, String), String> {
    let sources = sources();
    let modules: std::collections::BTreeMap<Vec<String>, String> = sources
        .iter()
        .filter_map(|s| module_path(&s.path).map(|m| (m, s.path.clone())))
        .collect();
    let mut edges = std::collections::BTreeMap::new();
    for source in &sources {
        let Some(own) = module_path(&source.path) else {
            continue;
        };
        let code = Code::of(source);
        let children: Vec<String> = source
            .lines
            .iter()
            .filter_map(|(_, line)| {
                let line = line.trim_start();
                let rest = line
                    .strip_prefix("pub mod ")
                    .or(line.strip_prefix("mod "))?;
                Some(rest.strip_suffix(';')?.to_string())
            })
            .collect();
        let mut roots: Vec<usize> = ["crate", "super", "self"]
            .iter()
            .flat_map(|root| path_roots(&code.text, root))
            .collect();
        for child in &children {
            roots.extend(path_roots(&code.text, child));
        }
        for at in roots {
            let (number, inline) = code.line_at(at);
            let mut here = own.clone();
            here.extend(inline);
            let mut paths = Vec::new();
            path_tree(&code.text, at, Vec::new(), &mut paths);
            for path in paths {
                let mut segments = path.into_iter();
                let mut target = match segments.next().as_deref() {
                    Some("crate") => Vec::new(),
                    Some("super") => here[..here.len().saturating_sub(1)].to_vec(),
                    Some(child) => {
                        let mut target = here.clone();
                        target.push(child.to_string());
                        target
                    }
                    None => here.clone(),
                };
                for segment in segments {
                    if segment == "super" {
                        target.pop();
                    } else {
                        target.push(segment);
                    }
                }
                while !modules.contains_key(&target) {
                    target.pop();
                }
                if own.starts_with(&target) {
                    continue;
                }
                let line = source
                    .lines
                    .iter()
                    .find(|(n, _)| *n == number)
                    .map(|(_, text)| text.trim().to_string())
                    .unwrap_or_default();
                edges
                    .entry((source.path.clone(), modules[&target].clone()))
                    .or_insert_with(|| format!("{}:{number}: {line}", source.path));
            }
        }
    }
    edges
}

/// Every circle of `edges` (no file twice), each from its first file in sorted order, at
/// most `cap` of them.
fn circles(
    edges: &std::collections::BTreeMap<(String, String), String>,
    cap: usize,
) -> Vec<Vec<String>> {
    let mut next: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    fn walk<'g>(
        next: &std::collections::BTreeMap<&'g str, Vec<&'g str>>,
        path: &mut Vec<&'g str>,
        found: &mut Vec<Vec<String>>,
        cap: usize,
    ) {
        let (start, last) = (path[0], path[path.len() - 1]);
        for &to in next.get(last).into_iter().flatten() {
            if found.len() >= cap {
                return;
            }
            if to == start {
                found.push(path.iter().map(|f| f.to_string()).collect());
            } else if to > start && !path.contains(&to) {
                path.push(to);
                walk(next, path, found, cap);
                path.pop();
            }
        }
    }
    let mut found = Vec::new();
    for &start in next.keys() {
        walk(&next, &mut vec![start], &mut found, cap);
    }
    found
}

/// No circle among the files of `src/` (beyond [`KNOWN_CIRCLES`]): because a circle makes
/// its files one unit in all but name: none of them can be read, tested, moved or replaced
/// without the others, and the layers ARCHITECTURE.md draws stop being true.
#[test]
fn no_circle_among_the_imports_of_src() {
    let edges = import_graph();
    let found = circles(&edges, 1000);
    let shown = |circle: &Vec<String>| {
        let mut steps = Vec::new();
        for (at, from) in circle.iter().enumerate() {
            let to = &circle[(at + 1) % circle.len()];
            steps.push(format!(
                "{from} -> {to} ({})",
                edges[&(from.clone(), to.clone())]
            ));
        }
        steps.join("\n    ")
    };
    let same = |known: &[&str], circle: &[String]| {
        known.iter().copied().eq(circle.iter().map(String::as_str))
    };
    let new: Vec<String> = found
        .iter()
        .filter(|circle| !KNOWN_CIRCLES.iter().any(|known| same(known, circle)))
        .map(shown)
        .collect();
    assert_none(
        "no circle among the imports of src/ files",
        "a circle makes its files one unit in all but name: none can be read, tested or \
         replaced without the others",
        new,
    );
    let gone: Vec<String> = KNOWN_CIRCLES
        .iter()
        .filter(|known| !found.iter().any(|circle| same(known, circle)))
        .map(|known| known.join(" -> "))
        .collect();
    assert_none(
        "KNOWN_CIRCLES lists only circles that exist (delete the entries of those broken)",
        "the list only shrinks, and a stale entry would let the circle come back unnoticed",
        gone,
    );
}

#[test]
fn the_import_rule_reads_paths_as_meant() {
    let trees = |text: &str| {
        let mut out = Vec::new();
        path_tree(text, 0, Vec::new(), &mut out);
        out.into_iter().map(|p| p.join("::")).collect::<Vec<_>>()
    };
    assert_eq!(
        trees("crate::http::body::json(x)"),
        ["crate::http::body::json"]
    );
    assert_eq!(
        trees("crate::{app::App, http::{self, body::{Body as B}},\n    store};"),
        [
            "crate::app::App",
            "crate::http",
            "crate::http::body::Body",
            "crate::store"
        ]
    );
    assert_eq!(trees("super::super::ops::*;"), ["super::super::ops"]);
    assert_eq!(
        path_roots("use crate::a; x::crate::b; $crate::c", "crate"),
        [4]
    );
    assert_eq!(
        module_path("src/http/body.rs"),
        Some(vec!["http".to_string(), "body".to_string()])
    );
    assert_eq!(module_path("src/lib.rs"), Some(Vec::new()));
    assert_eq!(module_path("src/main.rs"), None);
}
