//! One licence: every manifest names the one `LICENSE` states, and the npm
//! package ships its text.

use std::process::Command;

use serde_json::Value;

use super::*;

const LICENCE: &str = "Apache-2.0";

#[test]
fn every_manifest_names_the_repositorys_one_licence() {
    assert!(read("LICENSE").contains("Apache License\n                           Version 2.0"));
    let cargo: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    assert_eq!(cargo["package"]["license"].as_str(), Some(LICENCE));
    for manifest in ["clients/js/package.json", "clients/js/e2e/package.json"] {
        let json: Value = serde_json::from_str(&read(manifest)).expect("JSON");
        assert_eq!(json["license"], LICENCE, "{manifest}");
    }
}

/// npm packs only what `files` lists (plus package.json), so the text
/// ships as a copy beside it; the copy is the repository's own.
#[test]
fn the_npm_package_ships_the_licence_text() {
    assert_eq!(read("clients/js/LICENSE"), read("LICENSE"));
    let out = run(Command::new("npm")
        .args(["pack", "--dry-run", "--json", "--loglevel=error"])
        .current_dir(repo().join("clients/js")));
    assert_success(&out, "npm pack --dry-run");
    let packed: Value = serde_json::from_slice(&out.stdout).expect("npm pack's JSON");
    let files: Vec<&str> = packed[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|file| file["path"].as_str())
        .collect();
    for expected in ["LICENSE", "index.js", "index.d.ts", "package.json"] {
        assert!(files.contains(&expected), "{expected} in {files:?}");
    }
}
