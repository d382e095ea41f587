//! The homes' LVM volume group on the data disk, with the real LVM tools (lvm2) and a real
//! loop device: made once, found again, and found after a "reboot" (the loop device detached),
//! never made twice. Needs root and lvm2 (the test command installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::process::Command;

use pangeod::config::{Config, Layer};
use pangeod::storage::{StorageError, ensure_volume_group};

mod common;

fn available() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let lvm = Command::new("vgs").arg("--version").output().is_ok();
    if root && lvm {
        return true;
    }
    let why = if root {
        "lvm2 is not installed"
    } else {
        "not root"
    };
    if std::env::var("PANGEO_REQUIRE_FIXTURES").is_ok() {
        panic!("the storage test cannot run: {why} (integration-tests/install-deps installs lvm2)");
    }
    eprintln!("SKIPPED: the storage test needs root and lvm2: {why}");
    false
}

fn config(dir: &std::path::Path, group: &str, extra: &str) -> Config {
    std::fs::write(dir.join("pw"), "x").unwrap();
    std::fs::write(dir.join("ca.pem"), common::CA).unwrap();
    let text = format!(
        "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"ipa.example.test\"\n\
         base_dn = \"dc=example,dc=test\"\nbind_dn = \"uid=pangeod,dc=example,dc=test\"\npassword_file = \"pw\"\n\
         ca_file = \"ca.pem\"\n[daemon]\nstate_dir = \"state\"\ndata_dir = \"data\"\n\
         [storage]\nvolume_group = \"{group}\"\nsize_gb = 1\n{extra}"
    );
    let layer = Layer::from_str("t.toml", Some(dir.to_path_buf()), &text).unwrap();
    Config::from_layers(&[layer], &Default::default()).unwrap()
}

/// Removes the group and detaches its loop device, even when the test fails.
struct Cleanup {
    group: String,
    file: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("vgremove")
            .args(["-y", &self.group])
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output();
        for device in loops_of(&self.file) {
            let _ = Command::new("pvremove")
                .args(["-y", &device])
                .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                .output();
            let _ = Command::new("losetup").args(["-d", &device]).status();
        }
    }
}

fn loops_of(file: &std::path::Path) -> Vec<String> {
    let output = Command::new("losetup")
        .args(["--noheadings", "-O", "NAME", "-j"])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_volume_group_is_made_once_and_found_again_after_a_reboot() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let group = format!("pangeotest{}", std::process::id());
    let config = config(dir.path(), &group, "");
    let file = pangeod::storage::backing_file(&config);
    let _cleanup = Cleanup {
        group: group.clone(),
        file: file.clone(),
    };
    let rt = common::runtime();

    let made = rt.block_on(ensure_volume_group(&config)).unwrap();
    assert!(made.created);
    assert_eq!(made.name, group);
    assert!(made.physical_volume.starts_with("/dev/loop"), "{made:?}");
    // 1 GiB less LVM's metadata area.
    assert!(
        made.size_bytes > 1000 << 20 && made.size_bytes <= 1 << 30,
        "{made:?}"
    );
    // Sparse: the file takes almost no space yet.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    assert!(
        meta.blocks() * 512 < 16 << 20,
        "the backing file is not sparse"
    );

    let again = rt.block_on(ensure_volume_group(&config)).unwrap();
    assert!(!again.created, "found, not made again");
    assert_eq!(again.physical_volume, made.physical_volume);

    // A reboot: the loop device is gone; the file (on the data disk) and its group stay.
    for device in loops_of(&file) {
        assert!(
            Command::new("losetup")
                .args(["-d", &device])
                .status()
                .unwrap()
                .success()
        );
    }
    let seen = Command::new("vgs")
        .arg(&group)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(
        !seen.status.success(),
        "the group is invisible while detached"
    );
    let after = rt.block_on(ensure_volume_group(&config)).unwrap();
    assert!(
        !after.created,
        "after a reboot the group is found, not made anew"
    );
    assert_eq!(after.size_bytes, made.size_bytes);
}

#[test]
fn a_device_that_is_not_a_block_device_is_refused_naming_the_key() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("not-a-disk"), "x").unwrap();
    let config = config(dir.path(), "pangeotestdev", "device = \"not-a-disk\"\n");
    let error = common::runtime()
        .block_on(ensure_volume_group(&config))
        .unwrap_err();
    assert!(matches!(error, StorageError::NotABlockDevice { .. }));
    assert!(error.to_string().contains("storage.device"), "{error}");
}
