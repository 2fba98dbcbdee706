//! The import graph of `src/` files, read from their `use` lines and `crate::` paths, and
//! the rule that it has no circle.

use super::{assert_none, sources, Source};

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
