//! The layering of `src/` (written at the top of `src/lib.rs`), kept by
//! reading the source: a module may import from its own layer and the
//! layers below, never from one above; and nothing below the HTTP layer
//! names axum, hyper, tower or `AppState`. Inside the HTTP layer, the
//! route modules are leaves: nothing outside `http/routes/` names one, and
//! none names a sibling. And no file grows past [`MAX_LINES`].

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
        "auth" | "store" | "limiter" | "metrics" | "sweeper" | "events" | "webhooks" => Layer::Core,
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

/// The most lines a file in `src/` may have: past it, it holds more than
/// one concern and is split.
const MAX_LINES: usize = 800;

/// The words of `code` that follow `prefix` (`super::x`, `routes::x`) as
/// whole path segments.
fn segments_after<'a>(code: &'a str, prefix: &str) -> impl Iterator<Item = &'a str> {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None; // `subroutes::`, not `routes::`
        }
        let rest = &code[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

/// Every breach of the rooms of the HTTP layer and of the size limit in one
/// file, given the names of the route modules (the files of `http/routes/`
/// but `mod.rs`).
fn room_breaches(path: &str, source: &str, route_modules: &[&str]) -> Vec<String> {
    let code = code_of(source);
    let mut found = Vec::new();
    let lines = source.lines().count();
    if lines > MAX_LINES {
        found.push(format!(
            "{path}: {lines} lines, over {MAX_LINES}; split it by concern"
        ));
    }
    let own = path
        .strip_prefix("http/routes/")
        .map(|file| file.trim_end_matches(".rs"));
    let names_route = |prefix: &str| {
        segments_after(&code, prefix)
            .filter(|name| route_modules.contains(name) && Some(*name) != own)
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    };
    match own {
        None => {
            for name in names_route("routes::") {
                found.push(format!(
                    "{path} names the route module routes::{name}; what routes share lives in http/, beside them"
                ));
            }
        }
        Some("mod") => {}
        Some(own) => {
            let mut siblings = names_route("super::");
            siblings.extend(names_route("routes::"));
            for name in siblings {
                found.push(format!(
                    "http/routes/{own}.rs names its sibling route {name}; move what both need into http/"
                ));
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

/// Every Rust file of `src/`: its path below `src/`, with `/` between
/// folders, and its text.
fn source_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .iter()
        .map(|file| {
            let path = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (path, std::fs::read_to_string(file).unwrap())
        })
        .collect()
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let files = source_files();
    assert!(files.len() > 20, "read {} files from src/", files.len());
    let found: Vec<String> = files
        .iter()
        .flat_map(|(path, source)| breaches(path, source))
        .collect();
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn routes_are_leaves_and_no_file_is_over_the_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut route_modules: Vec<String> = std::fs::read_dir(src.join("http/routes"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let module = name.strip_suffix(".rs")?;
            (module != "mod").then(|| module.to_owned())
        })
        .collect();
    route_modules.sort();
    assert!(route_modules.len() > 5, "{route_modules:?}");
    let names: Vec<&str> = route_modules.iter().map(String::as_str).collect();
    let found: Vec<String> = source_files()
        .iter()
        .flat_map(|(path, source)| room_breaches(path, source, &names))
        .collect();
    assert!(found.is_empty(), "rooms broken:\n{}", found.join("\n"));
}

#[test]
fn the_room_check_catches_a_route_named_from_outside_a_sibling_and_a_long_file() {
    let routes = ["heartbeat", "presence", "stream"];
    // From outside the routes: a route module, by any path.
    let found = room_breaches(
        "http/edge.rs",
        "use crate::http::routes::heartbeat::MAX_BODY_BYTES;",
        &routes,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("routes::heartbeat"), "{found:?}");
    assert_eq!(
        room_breaches("lib.rs", "let r = routes::presence::router();", &routes).len(),
        1
    );
    // What routes/mod.rs offers is fine from outside.
    assert!(room_breaches("lib.rs", "let (api, _) = routes::api(&m);", &routes).is_empty());
    // A sibling, through `super::` or through the crate.
    let found = room_breaches(
        "http/routes/stream.rs",
        "use super::presence::ResourceViewersResponse;",
        &routes,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("sibling route presence"), "{found:?}");
    assert_eq!(
        room_breaches(
            "http/routes/stream.rs",
            "use crate::http::routes::heartbeat::X;",
            &routes
        )
        .len(),
        1
    );
    // A route's own tests, its own name, mod.rs and comments are fine.
    assert!(room_breaches("http/routes/stream.rs", "use super::*;", &routes).is_empty());
    assert!(
        room_breaches(
            "http/routes/stream.rs",
            "let _ = super::stream::X; // routes::presence",
            &routes
        )
        .is_empty()
    );
    assert!(
        room_breaches(
            "http/routes/mod.rs",
            "mod heartbeat;\nheartbeat::router()",
            &routes
        )
        .is_empty()
    );
    // A file over the limit, and one at it.
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    let found = room_breaches("store/redis.rs", &long, &routes);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("801 lines"), "{found:?}");
    let at_limit = "fn f() {}\n".repeat(MAX_LINES);
    assert!(room_breaches("store/redis.rs", &at_limit, &routes).is_empty());
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
