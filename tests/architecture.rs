//! The crate dependency rules of ARCHITECTURE.md ("Dependency rules"), checked against
//! `cargo metadata`: each workspace crate's normal dependencies on other workspace crates are
//! within the set the table allows, every workspace crate has a row, and the test-only doors
//! (`test-util` features, `testkit`) are opened by dev-dependencies only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// ARCHITECTURE.md "Dependency rules": crate → the workspace crates its normal
/// (non-dev, non-build) dependencies may name. Keep the two in step.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("catalogue", &[]),
    ("spec", &["domain", "catalogue"]),
    ("evaluate", &[]),
    ("supervise", &[]),
    ("testkit", &[]),
    ("migrations", &[]),
    ("store", &["domain", "catalogue", "migrations"]),
    ("subscribers", &["domain", "catalogue", "store"]),
    ("audience", &["spec", "store"]),
    ("channels", &["domain", "store"]),
    ("tracking", &["domain", "spec", "store"]),
    (
        "engine",
        &[
            "domain",
            "spec",
            "store",
            "audience",
            "channels",
            "tracking",
            "evaluate",
            "supervise",
        ],
    ),
    ("api", &["domain", "store", "supervise"]),
    (
        "campaignd",
        &[
            "domain",
            "catalogue",
            "spec",
            "store",
            "audience",
            "channels",
            "tracking",
            "engine",
            "evaluate",
            "api",
            "subscribers",
            "supervise",
            "migrations",
        ],
    ),
    (
        "bench",
        &[
            "domain",
            "catalogue",
            "spec",
            "store",
            "channels",
            "engine",
            "api",
            "subscribers",
        ],
    ),
    ("campaignd-tests", &["campaignd"]),
];

/// Crates whose normal dependencies may open a test-only door (`store`'s `test-util`, which
/// gives raw database access): the benchmarks compare the daemon with raw SQL.
const TEST_DOOR_ALLOWED: &[&str] = &["bench"];

struct Dep {
    name: String,
    dev: bool,
    features: Vec<String>,
}

/// Workspace crate → its dependencies on other workspace crates.
fn workspace() -> BTreeMap<String, Vec<Dep>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata gives JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("package name"))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| names.contains(d["name"].as_str().expect("dependency name")))
                .filter(|d| d["kind"].as_str() != Some("build"))
                .map(|d| Dep {
                    name: d["name"].as_str().unwrap().to_owned(),
                    dev: d["kind"].as_str() == Some("dev"),
                    features: d["features"]
                        .as_array()
                        .map(|fs| fs.iter().filter_map(|f| f.as_str().map(str::to_owned)))
                        .into_iter()
                        .flatten()
                        .collect(),
                })
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn every_crate_depends_only_on_the_crates_architecture_md_allows() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect();
    let mut broken = Vec::new();
    for (name, deps) in workspace() {
        let Some(ok) = allowed.get(name.as_str()) else {
            broken.push(format!(
                "{name}: no row in ARCHITECTURE.md's dependency rules (nor in ALLOWED here)"
            ));
            continue;
        };
        for dep in deps.iter().filter(|d| !d.dev) {
            if !ok.contains(dep.name.as_str()) {
                broken.push(format!("{name} depends on {}: not allowed", dep.name));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn test_only_doors_are_opened_by_dev_dependencies_only() {
    let mut broken = Vec::new();
    for (name, deps) in workspace() {
        for dep in deps.iter().filter(|d| !d.dev) {
            if dep.name == "testkit" {
                broken.push(format!("{name}: testkit as a normal dependency"));
            }
            if dep.features.iter().any(|f| f == "test-util")
                && !TEST_DOOR_ALLOWED.contains(&name.as_str())
            {
                broken.push(format!(
                    "{name}: {}'s `test-util` feature in a normal dependency",
                    dep.name
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
