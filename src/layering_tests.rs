//! The crate's files depend on each other in one direction only: a file that uses another
//! (`use super::x`, `crate::engine::x::Y`, ...) is never used back by it, directly or through
//! others. Read from the sources, so that a new cycle fails `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/engine/connection/mod.rs` -> `["engine", "connection"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    if last != "mod.rs" && last != "lib.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

/// The code of a line without its comment and the contents of its string literals.
fn code(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            '\'' => {
                // A char literal ('{', '\n') or a lifetime ('a).
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    let n = rest.find('\'').map_or(0, |i| i + 1);
                    for _ in 0..n.max(1) {
                        chars.next();
                    }
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The paths a piece of code names: `super::a::b`, `crate::x::y`, and the members of
/// `use super::{a, b::c}` groups (one level), as written.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["super::", "crate::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let mut end = at;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':') {
                end += 1;
            }
            let path = code[at..end].trim_end_matches(':').to_owned();
            if code[end..].starts_with('{') {
                let close = code[end..].find('}').map_or(code.len(), |j| end + j);
                for member in code[end + 1..close].split(',') {
                    let m = member.trim().split(" as ").next().unwrap_or("").trim();
                    if !m.is_empty() && m != "self" {
                        out.push(format!("{path}::{m}"));
                    }
                }
                out.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn the_crate_s_files_import_each_other_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeMap<Vec<String>, PathBuf> = all.iter().map(|f| (module_of(&src, f), f.clone())).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        // Inline modules (`mod tests {`) nest: `super` inside one is the file's own module.
        let mut inline: Vec<i64> = Vec::new();
        let mut depth: i64 = 0;
        for line in text.lines() {
            let c = code(line);
            let t = c.trim_start();
            let opens_inline = (t.starts_with("mod ") || t.starts_with("pub mod ") || t.starts_with("pub(crate) mod ")) && t.trim_end().ends_with('{');
            let base: Vec<String> = module.iter().cloned().chain(std::iter::repeat_n("<inline>".to_owned(), inline.len())).collect();
            for p in paths(&c) {
                let mut segs: Vec<&str> = p.split("::").collect();
                let mut target: Vec<String> = if segs[0] == "crate" {
                    segs.remove(0);
                    Vec::new()
                } else {
                    base.clone()
                };
                while segs.first() == Some(&"super") {
                    segs.remove(0);
                    target.pop();
                }
                target.retain(|s| s != "<inline>");
                target.extend(segs.iter().map(|s| s.to_string()));
                // The longest prefix that is a file of the crate.
                while !target.is_empty() && !modules.contains_key(&target) {
                    target.pop();
                }
                if !target.is_empty() && &target != module {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
            for ch in c.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if inline.last() == Some(&depth) {
                            inline.pop();
                        }
                    }
                    _ => {}
                }
            }
            if opens_inline {
                inline.push(depth - 1);
            }
        }
    }
    // A module that declares another (`mod x;`) contains it; containing is not using, so a
    // child may use its parent's items. Every other pair must go one way.
    fn reach(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, from: &Vec<String>, to: &Vec<String>, seen: &mut BTreeSet<Vec<String>>, path: &mut Vec<Vec<String>>) -> bool {
        if from == to {
            return true;
        }
        if !seen.insert(from.clone()) {
            return false;
        }
        for next in edges.get(from).into_iter().flatten() {
            path.push(next.clone());
            if reach(edges, next, to, seen, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut cycles = Vec::new();
    for (a, targets) in &edges {
        for b in targets {
            let mut path = vec![a.clone(), b.clone()];
            if reach(&edges, b, a, &mut BTreeSet::new(), &mut path) {
                cycles.push(path.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" -> "));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles among the crate's files:\n{}", cycles.join("\n"));
}
