//! `kafka-identity keygen` file handling: the modes of what it writes, and that it replaces
//! files by rename, so a broker that re-reads its JWKS on a change of mtime (Kafka 4.1+) never
//! reads a half-written one.
// Test helpers outside #[test] functions may panic too: clippy.toml only covers the latter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn keygen(kid: &str, key: &Path, jwks: &Path, append: bool) -> Output {
    let mut args = vec![
        "keygen",
        "--key-id",
        kid,
        "--key-out",
        key.to_str().unwrap(),
        "--jwks-out",
        jwks.to_str().unwrap(),
    ];
    if append {
        args.push("--append");
    }
    Command::new(env!("CARGO_BIN_EXE_kafka-identity"))
        .args(args)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn kids(jwks: &Path) -> Vec<String> {
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jwks).unwrap()).unwrap();
    value["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The directory's entries, sorted: a temporary file left behind would show here.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_key_is_0600_and_a_new_jwks_0644() {
    let dir = work_dir("keygen_new");
    let (key, jwks) = (dir.join("key.pem"), dir.join("jwks.json"));
    let output = keygen("k1", &key, &jwks, false);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&jwks), 0o644);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(kids(&jwks), ["k1"]);
    assert_eq!(entries(&dir), ["jwks.json", "key.pem"]);
}

#[test]
fn an_existing_key_file_open_to_others_is_replaced_with_mode_0600() {
    let dir = work_dir("keygen_existing_key");
    let (key, jwks) = (dir.join("key.pem"), dir.join("jwks.json"));
    std::fs::write(&key, "old key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = keygen("k1", &key, &jwks, false);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(mode(&key), 0o600, "the new key kept the old file's mode");
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("was mode 0644, open to other users; the new key file is mode 0600"),
        "{stderr}"
    );
    assert_eq!(entries(&dir), ["jwks.json", "key.pem"]);
}

#[test]
fn append_replaces_the_jwks_by_rename_and_keeps_its_mode() {
    let dir = work_dir("keygen_append");
    let jwks = dir.join("jwks.json");
    let output = keygen("k1", &dir.join("k1.pem"), &jwks, false);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    std::fs::set_permissions(&jwks, std::fs::Permissions::from_mode(0o640)).unwrap();
    // A second name for the file the broker has now: written in place, it would change
    // under that name too (and a reader could catch it half-written); replaced by rename,
    // it stays exactly the old JWKS.
    let held = dir.join("held-by-the-broker.json");
    std::fs::hard_link(&jwks, &held).unwrap();
    let before = std::fs::read(&jwks).unwrap();
    let inode = std::fs::metadata(&jwks).unwrap().ino();

    let output = keygen("k2", &dir.join("k2.pem"), &jwks, true);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(kids(&jwks), ["k1", "k2"]);
    assert_ne!(
        std::fs::metadata(&jwks).unwrap().ino(),
        inode,
        "the JWKS was rewritten in place, not replaced"
    );
    assert_eq!(std::fs::read(&held).unwrap(), before);
    assert_eq!(mode(&jwks), 0o640, "the replaced JWKS lost its mode");
    assert_eq!(
        entries(&dir),
        ["held-by-the-broker.json", "jwks.json", "k1.pem", "k2.pem"]
    );
}

#[test]
fn append_through_a_symbolic_link_replaces_the_file_it_points_to() {
    let dir = work_dir("keygen_link");
    std::fs::create_dir_all(dir.join("real")).unwrap();
    let real = dir.join("real/jwks.json");
    assert_eq!(
        keygen("k1", &dir.join("k1.pem"), &real, false)
            .status
            .code(),
        Some(0)
    );
    let link = dir.join("jwks.json");
    std::os::unix::fs::symlink("real/jwks.json", &link).unwrap();
    let output = keygen("k2", &dir.join("k2.pem"), &link, true);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(kids(&real), ["k1", "k2"]);
    assert_eq!(entries(&dir.join("real")), ["jwks.json"]);
}

#[test]
fn a_refused_append_leaves_the_jwks_and_the_directory_as_they_were() {
    let dir = work_dir("keygen_refused");
    let jwks = dir.join("jwks.json");
    assert_eq!(
        keygen("k1", &dir.join("k1.pem"), &jwks, false)
            .status
            .code(),
        Some(0)
    );
    let before = std::fs::read(&jwks).unwrap();
    // The same kid again: refused before anything is written.
    let output = keygen("k1", &dir.join("again.pem"), &jwks, true);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("already has a key with kid \"k1\""));
    assert_eq!(std::fs::read(&jwks).unwrap(), before);
    assert_eq!(entries(&dir), ["jwks.json", "k1.pem"]);
    // A JWKS in a directory that is not there: an error naming it, and no key either.
    let output = keygen(
        "k2",
        &dir.join("k2.pem"),
        &dir.join("gone/jwks.json"),
        false,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8(output.stderr).unwrap().contains("gone"));
    assert_eq!(entries(&dir), ["jwks.json", "k1.pem"]);
}
