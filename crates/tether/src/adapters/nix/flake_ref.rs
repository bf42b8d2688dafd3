//! Turning what the user typed after `--flake` into a reference that
//! `builtins.getFlake` accepts.
//!
//! `builtins.getFlake` does not resolve relative paths, and given an
//! absolute path it does not look for an enclosing Git repository the way
//! `nix build .` does. So local paths are resolved here like Nix 2.8's
//! command line does: made absolute, and inside a Git work tree turned into
//! `git+file://ROOT?dir=SUBDIR`, so that (as with `nix build`) only files
//! Git tracks are seen. Anything else (`github:…`, `git+https://…`,
//! registry names) is passed through untouched.

use std::path::{Component, Path, PathBuf};

/// True for the spellings Nix treats as a path: `.`, `..`, `./x`, `../x`, `/x`.
fn is_local_path(reference: &str) -> bool {
    reference == "."
        || reference == ".."
        || reference.starts_with("./")
        || reference.starts_with("../")
        || reference.starts_with('/')
}

/// Joins `path` onto `cwd` and removes `.` and `..` lexically, as Nix's
/// `absPath` does (symlinks are kept, like Nix).
fn absolute(cwd: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in cwd.join(path).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Resolves a flake reference relative to `cwd` (see the module docs).
pub fn resolve_flake_ref(reference: &str, cwd: &Path) -> String {
    let (reference, path_scheme) = match reference.strip_prefix("path:") {
        Some(rest) => (rest, true),
        None => (reference, false),
    };
    let path_part = reference.split('?').next().unwrap_or(reference);
    if !(is_local_path(path_part) || (path_scheme && !reference.is_empty())) {
        return if path_scheme {
            format!("path:{reference}")
        } else {
            reference.to_owned()
        };
    }
    let (path, query) = match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    };
    let mut dir = absolute(cwd, path);
    // Like `nix build` in a subdirectory: use the nearest enclosing flake.
    if !dir.join("flake.nix").exists() {
        if let Some(found) = dir.ancestors().find(|d| d.join("flake.nix").exists()) {
            dir = found.to_path_buf();
        }
    }
    if !path_scheme {
        if let Some(root) = dir.ancestors().find(|d| d.join(".git").exists()) {
            let mut params: Vec<String> = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            if let Ok(sub) = dir.strip_prefix(root) {
                if !sub.as_os_str().is_empty() {
                    params.push(format!("dir={}", sub.display()));
                }
            }
            let mut url = format!("git+file://{}", root.display());
            if !params.is_empty() {
                url.push('?');
                url.push_str(&params.join("&"));
            }
            return url;
        }
    }
    match query {
        Some(query) => format!("path:{}?{query}", dir.display()),
        // A plain absolute path needs no URL escaping of spaces and the like.
        None if !path_scheme => dir.display().to_string(),
        None => format!("path:{}", dir.display()),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn remote_and_registry_refs_pass_through() {
        let cwd = Path::new("/nonexistent/x");
        for r in [
            "github:owner/repo",
            "nixpkgs",
            "git+https://example.com/r?ref=main",
            "nixpkgs/nixos-22.05",
        ] {
            assert_eq!(resolve_flake_ref(r, cwd), r);
        }
    }

    #[test]
    fn local_paths_become_absolute() {
        let cwd = Path::new("/nonexistent/a/b");
        assert_eq!(resolve_flake_ref(".", cwd), "/nonexistent/a/b");
        assert_eq!(resolve_flake_ref("./c/./d", cwd), "/nonexistent/a/b/c/d");
        assert_eq!(resolve_flake_ref("../c", cwd), "/nonexistent/a/c");
        assert_eq!(resolve_flake_ref("/abs/x", cwd), "/abs/x");
        assert_eq!(
            resolve_flake_ref("path:./c", cwd),
            "path:/nonexistent/a/b/c"
        );
        assert_eq!(
            resolve_flake_ref(".?narHash=x", cwd),
            "path:/nonexistent/a/b?narHash=x"
        );
    }

    #[test]
    fn paths_inside_a_git_tree_become_git_file_urls() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::create_dir_all(root.join("sub/flake")).expect("mkdir");
        std::fs::write(root.join("sub/flake/flake.nix"), "{}").expect("write");
        assert_eq!(
            resolve_flake_ref("./sub/flake", root),
            format!("git+file://{}?dir=sub/flake", root.display())
        );
        // A directory below the flake resolves to the flake itself.
        std::fs::create_dir_all(root.join("sub/flake/deeper")).expect("mkdir");
        assert_eq!(
            resolve_flake_ref(".", &root.join("sub/flake/deeper")),
            format!("git+file://{}?dir=sub/flake", root.display())
        );
        std::fs::write(root.join("flake.nix"), "{}").expect("write");
        assert_eq!(
            resolve_flake_ref(".", root),
            format!("git+file://{}", root.display())
        );
        // `path:` opts out of Git, as with Nix.
        assert_eq!(
            resolve_flake_ref("path:.", root),
            format!("path:{}", root.display())
        );
    }
}
