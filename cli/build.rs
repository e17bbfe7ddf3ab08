//! Records which source the binary was built from, for `switchyard --version`: the git
//! revision of the checkout (with `-dirty` when tracked files differ from it), or nothing
//! when there is no checkout or no git (a source tarball), and the version alone is shown.

use std::path::Path;
use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let rev = git(&dir, &["rev-parse", "--short=12", "HEAD"]);
    if let Some(rev) = &rev {
        let dirty = git(&dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        println!("cargo:rustc-env=SWITCHYARD_GIT_REV={rev}{}", if dirty { "-dirty" } else { "" });
        // Look again when the checkout moves to another commit (HEAD, the branch's ref, the
        // index) or a source of the binary changes (which may make it dirty). Only paths
        // that exist: cargo reruns the script on every build for a missing one.
        let branch = git(&dir, &["symbolic-ref", "-q", "HEAD"]);
        let git_paths = ["HEAD", "index"].into_iter().chain(branch.as_deref());
        let git_files = git_paths.filter_map(|name| git(&dir, &["rev-parse", "--git-path", name]));
        let sources = ["src", "../core/src", "../adapters/src", "../Cargo.lock"].map(String::from);
        for path in git_files.chain(sources) {
            let path = Path::new(&dir).join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// `git ARGS` run in `dir`: its trimmed output, or `None` when git is missing or fails.
fn git(dir: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("git").current_dir(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
