//! The layering of `src/` (written at the top of `src/lib.rs`), kept by
//! reading the source: a module may import from its own layer and the
//! layers below, never from one above; and nothing below the HTTP layer
//! names axum, hyper, tower or `AppState`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first: a layer may use itself and those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Base,
    Core,
    Http,
    App,
}

/// The layer of a file, by its path under `src/`; `None` for a file no rule
/// covers, which fails the test until it is placed.
fn layer_of_file(path: &str) -> Option<Layer> {
    let top = path.split('/').next()?.trim_end_matches(".rs");
    layer_of_module(top)
}

/// The layer of a top-level module (or item of the crate root).
fn layer_of_module(name: &str) -> Option<Layer> {
    Some(match name {
        "config" | "clock" | "domain" => Layer::Base,
        "auth" | "store" | "limiter" | "metrics" | "sweeper" => Layer::Core,
        "http" | "AppState" => Layer::Http,
        "lib" | "main" | "telemetry" | "app" | "serve" | "shutdown_signal" | "DRAIN_TIMEOUT" => {
            Layer::App
        }
        _ => return None,
    })
}

/// Words that belong to the HTTP layer and above.
const HTTP_WORDS: [&str; 4] = ["axum", "hyper", "tower", "AppState"];

/// The source without comments: line comments (docs included) are text
/// for readers, not dependencies.
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file names through `crate::` (plain paths and
/// `use crate::{a, b::c}` groups alike). `top_level` files (directly in
/// `src/`) name the crate root through `super::` as well.
fn crate_modules(code: &str, top_level: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if top_level {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `foo_crate::`, not a crate path
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                names.extend(group.split(',').filter_map(|item| {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    (!name.is_empty()).then_some(name)
                }));
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// Every breach of the layering in one file, as lines for the failure.
fn breaches(path: &str, source: &str) -> Vec<String> {
    let Some(layer) = layer_of_file(path) else {
        return vec![format!(
            "{path}: in no layer; add it to layer_of_module in tests/api/layers.rs and to the layout in src/lib.rs"
        )];
    };
    let code = code_of(source);
    let top_level = !path.contains('/') && path != "lib.rs";
    let mut found = Vec::new();
    for name in crate_modules(&code, top_level) {
        match layer_of_module(&name) {
            Some(target) if target > layer => found.push(format!(
                "{path} ({layer:?}) uses crate::{name} ({target:?}), a higher layer"
            )),
            Some(_) => {}
            None => found.push(format!("{path} uses crate::{name}, which is in no layer")),
        }
    }
    if layer < Layer::Http {
        for word in HTTP_WORDS {
            // `axum` and `tower_http` are named; `towers` is another word.
            let named = code.match_indices(word).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + word.len()..].chars().next();
                let starts_word = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
                let ends_word = !after.is_some_and(char::is_alphanumeric);
                starts_word && ends_word
            });
            if named {
                found.push(format!("{path} ({layer:?}) names `{word}`"));
            }
        }
    }
    found
}

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

#[test]
fn no_module_imports_from_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "read {} files from {}",
        files.len(),
        src.display()
    );
    let found: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let path = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            breaches(&path, &std::fs::read_to_string(file).unwrap())
        })
        .collect();
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_check_catches_an_upward_import_and_http_types_below_http() {
    let upward = "use crate::http::state::AppState;\nuse crate::{clock, http::error::ApiError};";
    let found = breaches("store/memory.rs", upward);
    assert!(
        found.iter().any(|b| b.contains("uses crate::http")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|b| b.contains("names `AppState`")),
        "{found:?}"
    );
    assert_eq!(
        breaches("config.rs", "use crate::auth::KeySource;").len(),
        1
    );
    assert_eq!(breaches("config.rs", "fn f() -> axum::Router {}").len(), 1);
    assert_eq!(breaches("config.rs", "use super::AppState;").len(), 2);
    assert!(
        breaches("unplaced.rs", "").len() == 1,
        "a new file must be placed"
    );
    // Downward and same-layer imports are fine, and comments are not code.
    assert!(breaches("http/routes/modules.rs", "use crate::store::Store;").is_empty());
    assert!(breaches("auth/verify.rs", "use crate::config::JwtArgs;").is_empty());
    assert!(
        breaches(
            "store/mod.rs",
            "/// Unlike [`crate::http::state`], axum-free."
        )
        .is_empty()
    );
    assert!(breaches("domain.rs", "let towers = 1; // tower").is_empty());
}
