//! Replays every committed fuzz corpus file (fuzz/corpus/<target>/*) through the same
//! harnesses the libFuzzer targets run (fuzz/harness.rs), so `cargo test --lib` checks the
//! parsers against every input the fuzzer kept, and every crash regression.

mod harness {
    use crate::protocol as proto;
    include!("../../fuzz/harness.rs");
}

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus")
}

fn files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut out: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(e) => panic!("corpus {}: {e}", dir.display()),
    };
    out.sort();
    out
}

fn replay(target: &str) {
    let Some((_, run)) = harness::TARGETS.iter().find(|(name, _)| *name == target) else {
        panic!("no harness for {target}")
    };
    let list = files(target);
    assert!(!list.is_empty(), "empty corpus for {target}");
    for path in list {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{target}: {} fails", path.display());
        }
    }
}

#[test]
fn every_corpus_has_a_harness() {
    // A corpus directory without a replay arm would silently go untested.
    for entry in std::fs::read_dir(corpus_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(harness::TARGETS.iter().any(|(t, _)| *t == name), "corpus {name} has no harness in TARGETS");
    }
}

#[test]
fn corpus_receiver() {
    replay("receiver");
}

#[test]
fn corpus_handshake_request() {
    replay("handshake_request");
}

#[test]
fn corpus_handshake_response() {
    replay("handshake_response");
}

#[test]
fn corpus_subprotocols() {
    replay("subprotocols");
}

#[test]
fn corpus_utf8() {
    replay("utf8");
}
