//! Permission errors: a path the process may not write is named in the
//! error with the operation, nothing is half-written, and once the
//! permission is back a rerun succeeds. The CLI runs as an unprivileged
//! user: itself when not root, `nobody` (uid 65534) when root, since root
//! ignores permission bits.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::ok;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The CLI binary where the unprivileged user can run it: a hard link in
/// `dir` (the build's folders may not be open to it), else the original.
fn binary(dir: &Path) -> PathBuf {
    let link = dir.join("feature-store");
    match std::fs::hard_link(env!("CARGO_BIN_EXE_feature-store"), &link) {
        Ok(()) => link,
        Err(_) => PathBuf::from(env!("CARGO_BIN_EXE_feature-store")),
    }
}

fn run(bin: &Path, repo: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("--repo").arg(repo).args(args).current_dir(repo).env("HOME", repo);
    if is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.output().expect("run feature-store")
}

/// Exit code 1 and an error naming `path` and the denial, never a panic.
fn denied(out: &Output, path: &Path) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&path.display().to_string()), "the error names {}: {err}", path.display());
    assert!(err.contains("ermission denied"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn unwritable_paths_are_named_and_a_rerun_succeeds_once_writable() {
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    let bin = binary(tmp.path());
    let repo = tmp.path().join("demo");
    ok(&crate::cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    if is_root() {
        let chown = Command::new("chown").args(["-R", &format!("{NOBODY}:{NOBODY}")]).arg(&repo).status().unwrap();
        assert!(chown.success());
    }
    ok(&run(&bin, &repo, &["apply"]));
    let data = repo.join("data");
    let registry = data.join("registry.json");
    let before = std::fs::read(&registry).unwrap();

    // The registry's folder is read-only: apply names the registry, which is intact.
    let defs = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let changed = defs.replacen("description: A driver on the platform", "description: Someone who drives", 1);
    assert_ne!(defs, changed, "test bug: the demo definitions changed");
    std::fs::write(repo.join("features.yaml"), &changed).unwrap();
    chmod(&data, 0o555);
    denied(&run(&bin, &repo, &["apply"]), &registry);
    assert_eq!(std::fs::read(&registry).unwrap(), before, "the registry changed");

    // The online store cannot be created there either.
    denied(&run(&bin, &repo, &["materialize-incremental"]), &data.join("online.db"));

    // An output folder that is read-only.
    let out_dir = repo.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&out_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    chmod(&out_dir, 0o555);
    std::fs::write(repo.join("entities.csv"), "driver_id,event_timestamp\n1001,2030-01-01T00:00:00Z\n").unwrap();
    let output = out_dir.join("train.parquet");
    let args = ["historical", "--entities", "entities.csv", "--features", "driver_hourly_stats:conv_rate", "--output"];
    let mut with_output: Vec<&str> = args.to_vec();
    let output_text = output.display().to_string();
    with_output.push(&output_text);
    denied(&run(&bin, &repo, &with_output), &output);
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "a file was left in the output folder");

    // Writable again: everything goes through.
    chmod(&data, 0o755);
    chmod(&out_dir, 0o755);
    ok(&run(&bin, &repo, &["apply"]));
    assert!(ok(&run(&bin, &repo, &["plan"])).contains("No changes."));
    ok(&run(&bin, &repo, &["materialize-incremental"]));
    ok(&run(&bin, &repo, &with_output));
    assert!(output.exists());
}
