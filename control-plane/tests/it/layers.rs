//! The control plane's layers point one way: api → service → store, publisher, edges,
//! webhooks → model. Read from the source: every `crate::` path a module names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each module may use, besides itself. `lib` is the crate root (`AppState`, `app`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("clock", &["model"]),
    ("auth", &["model"]),
    ("publisher", &["model"]),
    ("store", &["model"]),
    ("plans", &["model"]),
    ("import", &["model"]),
    ("outbound", &["model"]),
    ("edges", &["model", "store", "publisher", "auth", "clock", "outbound"]),
    ("webhooks", &["model", "store", "clock", "outbound"]),
    ("metrics", &["publisher"]),
    ("transport", &[]),
    ("service", &["model", "store", "publisher", "auth", "edges", "clock", "plans", "outbound"]),
    ("error", &["model", "service", "store"]),
    ("cli", &["model", "plans", "clock", "import"]),
    (
        "api",
        &[
            "lib",
            "model",
            "service",
            "error",
            "auth",
            "publisher",
            "metrics",
            "plans",
            "store",
            "transport",
        ],
    ),
];

/// Every `crate::<module>` a file names; `crate::AppState` and the like name `lib`.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let name: String = text[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let module = if name.starts_with(char::is_uppercase) { "lib".into() } else { name };
        used.insert(module);
    }
    used
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn lower_layers_never_name_higher_ones_and_modules_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let module =
            relative.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let allowed = ALLOWED
            .iter()
            .find(|(name, _)| *name == module)
            .unwrap_or_else(|| panic!("module `{module}` has no place in ALLOWED"))
            .1;
        let text = std::fs::read_to_string(&file).unwrap();
        for used in used_modules(&text) {
            if used != module && !allowed.contains(&used.as_str()) {
                violations.push(format!("{} names crate::{used}", relative.display()));
            }
            if used != module {
                graph.entry(module.clone()).or_default().insert(used);
            }
        }
    }
    assert!(violations.is_empty(), "layers crossed:\n{}", violations.join("\n"));

    // No circle: repeatedly remove modules that use nothing left.
    let mut left = graph.clone();
    while let Some(leaf) = left
        .iter()
        .find(|(_, uses)| uses.iter().all(|used| !left.contains_key(used)))
        .map(|(module, _)| module.clone())
    {
        left.remove(&leaf);
    }
    assert!(left.is_empty(), "an import circle among {:?}", left.keys().collect::<Vec<_>>());
    assert!(graph["service"].contains("store") && !graph.contains_key("model"), "{graph:?}");
}
