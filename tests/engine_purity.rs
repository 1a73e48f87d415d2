//! The invariant "the engine and the codecs do no I/O and read no clock",
//! checked on their source: `src/engine/`, `src/proto/` and the vocabulary
//! they share (`src/domain.rs`) name nothing of `server`, `switch`, `store`,
//! `notify`, tokio, `std::fs`, sockets, threads, processes or the clock.
//! Test code (`#[cfg(test)]` onwards, `*_tests.rs`) may.

use std::path::{Path, PathBuf};

/// Paths whose use breaks the invariant, as they appear in source.
const FORBIDDEN: &[&str] = &[
    "crate::server",
    "crate::switch",
    "crate::store",
    "crate::notify",
    "crate::testbed",
    "crate::cli",
    "tokio",
    "std::fs",
    "std::net",
    "std::thread",
    "std::process",
    "std::env",
    "Instant::now",
    "SystemTime",
    "async fn",
];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|x| x == "rs"))
        .filter(|path| !path.to_string_lossy().ends_with("_tests.rs"))
        .collect();
    files.sort();
    files
}

/// The forbidden uses in one file's product code: (line number, path).
fn violations(source: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        // What follows `//` on a line is a comment too.
        let code = code.split("//").next().unwrap_or_default();
        for path in FORBIDDEN {
            if code.contains(path) {
                found.push((number + 1, *path));
            }
        }
    }
    found
}

#[test]
fn the_scanner_finds_what_it_looks_for() {
    let planted = "use std::fs::File;\n// use tokio::net::TcpStream;\nfn f() { let t = std::time::Instant::now(); }\n#[cfg(test)]\nuse crate::store::Store;\n";
    assert_eq!(violations(planted), [(1, "std::fs"), (3, "Instant::now")]);
}

#[test]
fn engine_proto_and_domain_do_no_io_and_read_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = sources(&root.join("engine"));
    files.extend(sources(&root.join("proto")));
    files.push(root.join("domain.rs"));
    assert!(files.len() >= 10, "found the sources: {files:?}");
    let mut all = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        for (line, path) in violations(&source) {
            all.push(format!("{}:{line}: {path}", file.display()));
        }
    }
    assert!(
        all.is_empty(),
        "I/O or the clock in pure code:\n{}",
        all.join("\n")
    );
}
