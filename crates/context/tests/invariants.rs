//! Architecture invariant: with default features, tracewire-context depends on no async
//! runtime, network or I/O crate (checked on the resolved dependency graph).

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "mio",
    "futures",
    "futures-util",
    "hyper",
    "h2",
    "tonic",
    "http",
    "reqwest",
    "socket2",
    "rustls",
    "openssl",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "rusqlite",
    "libc",
];

#[test]
fn default_features_pull_in_no_runtime_network_or_io_crate() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "tracewire-context", "-e", "normal", "--prefix", "none", "--format", "{p}", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"tracewire-context"), "unexpected cargo tree output: {tree}");
    let bad: Vec<&&str> = crates.iter().filter(|c| FORBIDDEN.contains(c)).collect();
    assert!(bad.is_empty(), "forbidden dependencies: {bad:?}\n{tree}");
    // The whole normal dependency set, as documented in docs/architecture.md.
    let mut names: Vec<&str> = crates.clone();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        ["proc-macro2", "quote", "syn", "thiserror", "thiserror-impl", "tracewire-context", "unicode-ident"]
    );
}
