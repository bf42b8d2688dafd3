//! The crate's layers, checked: every module only uses modules of layers
//! below its own, so no import circle can form (docs/architecture.md).

/// The top-level modules, bottom layer first; a module may use any module
/// of an earlier layer, and none of its own layer or later.
const LAYERS: &[&[&str]] = &[
    &["shell", "nix_text", "text"],
    &["model"],
    &["spec"],
    &["inventory"],
    &["remote"],
    &["report"],
    &["ports"],
    &["checks", "identity", "onboard", "rollout", "trial_choice"],
    &["deploy", "plan"],
    &["rehearsal"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The `crate::x` modules a source text refers to, outside comments.
fn uses(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

mod tests {
    use super::*;
    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_module_uses_only_the_layers_below_its_own() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut wrong = Vec::new();
        let mut seen_modules = std::collections::BTreeSet::new();
        for file in &files {
            let relative = file.strip_prefix(&src).unwrap();
            let first = relative.iter().next().unwrap().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "layering" {
                continue;
            }
            seen_modules.insert(module.clone());
            let own = layer_of(&module)
                .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"));
            let text = std::fs::read_to_string(file).unwrap();
            for used in uses(&text) {
                if used == module {
                    continue;
                }
                match layer_of(&used) {
                    Some(l) if l < own => {}
                    _ => wrong.push(format!("{} uses crate::{used}", relative.display())),
                }
            }
        }
        assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
        let listed: std::collections::BTreeSet<String> = LAYERS
            .iter()
            .flat_map(|l| l.iter().map(|m| m.to_string()))
            .collect();
        assert_eq!(listed, seen_modules, "LAYERS and the modules differ");
    }

    #[test]
    fn uses_are_found_in_code_not_in_comments() {
        assert_eq!(
            uses("use crate::model::X;\n// see crate::deploy\nlet a = crate::text::tail(b);"),
            ["model", "text"]
        );
    }
}
