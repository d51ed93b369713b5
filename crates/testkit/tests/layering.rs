//! Architecture invariant: data flows one way through the crates. No workspace crate
//! depends (normal, build or dev dependency) on one to its right in the order of
//! `docs/architecture.md`:
//!
//! context, proto, telemetry, rpc, store, exec, relay, admin, collector, cli, bench
//!
//! then the two programs-only members, examples and benches, which nothing depends on.
//! `tracewire-testkit` is a test helper: any crate may dev-depend on it, it depends on no
//! workspace crate, and only the measuring tools (bench, examples, benches) link it as a
//! normal dependency.
//!
//! The graph is read with `cargo metadata --no-deps` (each member's declared
//! dependencies), so a violation fails here as soon as it is written in a `Cargo.toml`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The workspace's crates, left to right: a crate may depend only on crates to its left.
const ORDER: &[&str] = &[
    "tracewire-context",
    "tracewire-proto",
    "tracewire-telemetry",
    "tracewire-rpc",
    "tracewire-store",
    "tracewire-exec",
    "tracewire-relay",
    "tracewire-admin",
    "tracewire-collector",
    "tracewire-cli",
    "tracewire-bench",
    "tracewire-examples",
    "tracewire-benches",
];

/// The test helper, outside the order.
const TESTKIT: &str = "tracewire-testkit";

/// The first crate of `ORDER` that may link the test helper as a normal dependency.
const FIRST_TOOL: &str = "tracewire-bench";

/// One dependency edge between workspace members.
#[derive(Debug)]
struct Edge {
    from: String,
    to: String,
    /// `normal`, `build` or `dev`.
    kind: String,
}

/// The dependency edges between workspace members, and the members' names, from the JSON
/// of `cargo metadata --format-version 1 --no-deps`.
fn edges(metadata: &Value) -> (Vec<String>, Vec<Edge>) {
    let packages = metadata["packages"].as_array().expect("cargo metadata lists packages");
    let members: Vec<String> =
        packages.iter().map(|p| p["name"].as_str().expect("a package has a name").to_owned()).collect();
    let mut edges = Vec::new();
    for package in packages {
        let from = package["name"].as_str().expect("a package has a name");
        let dependencies = package["dependencies"].as_array().expect("a package lists its dependencies");
        for dependency in dependencies {
            let to = dependency["name"].as_str().expect("a dependency has a name");
            if !members.iter().any(|m| m == to) {
                continue;
            }
            let kind = dependency["kind"].as_str().unwrap_or("normal").to_owned();
            edges.push(Edge { from: from.to_owned(), to: to.to_owned(), kind });
        }
    }
    (members, edges)
}

fn position(name: &str) -> Option<usize> {
    ORDER.iter().position(|c| *c == name)
}

/// Every way the graph breaks the layering, one line each (empty when it holds).
fn violations(metadata: &Value) -> Vec<String> {
    let (members, edges) = edges(metadata);
    let mut found = Vec::new();
    for member in &members {
        if member != TESTKIT && position(member).is_none() {
            found.push(format!(
                "{member} is a workspace member with no place in the layering: add it to \
                 ORDER here and to docs/architecture.md"
            ));
        }
    }
    let first_tool = position(FIRST_TOOL).expect("FIRST_TOOL is in ORDER");
    for edge in &edges {
        let Edge { from, to, kind } = edge;
        if from == TESTKIT {
            found.push(format!("{TESTKIT} depends ({kind}) on {to}: the test helper depends on no workspace crate"));
            continue;
        }
        let (Some(from_at), to_at) = (position(from), position(to)) else {
            continue;
        };
        let problem = match to_at {
            None if to == TESTKIT && kind != "dev" && from_at < first_tool => {
                format!(
                    "{from} depends ({kind}) on {TESTKIT}: a library links the test helper only as a dev-dependency"
                )
            }
            Some(to_at) if to_at == from_at => format!("{from} depends ({kind}) on itself"),
            Some(to_at) if to_at > from_at => {
                format!("{from} depends ({kind}) on {to}, which is to its right in the layering")
            }
            _ => continue,
        };
        found.push(problem);
    }
    found
}

fn workspace_metadata() -> Value {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn no_crate_depends_on_one_to_its_right() {
    let metadata = workspace_metadata();
    let (members, edges) = edges(&metadata);
    assert!(members.len() >= ORDER.len() && edges.len() > 10, "the metadata is the workspace's: {members:?}");
    let found = violations(&metadata);
    assert!(found.is_empty(), "layering violations:\n{}", found.join("\n"));
}

/// The checker itself finds each kind of violation (a synthetic graph, so this holds
/// whatever the workspace's `Cargo.toml`s say).
#[test]
fn the_checker_finds_each_kind_of_violation() {
    let package = |name: &str, deps: &[(&str, Option<&str>)]| {
        serde_json::json!({
            "name": name,
            "dependencies": deps
                .iter()
                .map(|(to, kind)| serde_json::json!({ "name": to, "kind": kind }))
                .collect::<Vec<_>>(),
        })
    };
    let mut packages: Vec<Value> = ORDER.iter().map(|name| package(name, &[])).collect();
    packages.push(package(TESTKIT, &[]));
    let clean = serde_json::json!({ "packages": packages.clone() });
    assert_eq!(violations(&clean), Vec::<String>::new());

    let with = |name: &str, deps: &[(&str, Option<&str>)]| {
        let mut packages = packages.clone();
        packages.retain(|p| p["name"] != name);
        packages.push(package(name, deps));
        serde_json::json!({ "packages": packages })
    };
    // Allowed: leftward edges of every kind, testkit as a dev-dependency, and as a
    // normal one of a tool.
    let allowed = [
        with(
            "tracewire-exec",
            &[
                ("tracewire-store", None),
                ("tracewire-telemetry", Some("dev")),
                ("tracewire-proto", Some("build")),
                (TESTKIT, Some("dev")),
                ("serde", None),
            ],
        ),
        with("tracewire-bench", &[(TESTKIT, None)]),
    ];
    for metadata in &allowed {
        assert_eq!(violations(metadata), Vec::<String>::new());
    }
    // Refused: each kind of edge to the right, a crate on itself, testkit linked by a
    // library, testkit depending on the workspace, a member outside the order.
    let refused = [
        with("tracewire-exec", &[("tracewire-collector", Some("dev"))]),
        with("tracewire-context", &[("tracewire-proto", None)]),
        with("tracewire-store", &[("tracewire-exec", Some("build"))]),
        with("tracewire-cli", &[("tracewire-examples", Some("dev"))]),
        with("tracewire-rpc", &[("tracewire-rpc", Some("dev"))]),
        with("tracewire-relay", &[(TESTKIT, None)]),
        with(TESTKIT, &[("tracewire-context", None)]),
        with("tracewire-new", &[]),
    ];
    for metadata in &refused {
        assert_eq!(violations(metadata).len(), 1, "{metadata}");
    }
}
