//! The LVM volume group the homes' provisioner (OpenEBS LVM LocalPV) carves volumes from,
//! made by pangeod on the data disk: on `storage.device` when one is configured, otherwise on a
//! sparse file on the data disk's filesystem attached as a loop device (which must be attached
//! again at every boot; LVM then finds the group on it). Never shrunk, never removed.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use tokio::process::Command;

use crate::config::Config;

/// Share of the data disk's free space a new backing file may grow to (it is sparse: it takes
/// space only as homes fill up); the rest stays for `state.db`, the hub database and k3s.
const FREE_SHARE: f64 = 0.8;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error(
        "{tool} is not installed; the image must include the lvm2 and mount packages (images/recipe/packages)"
    )]
    MissingTool { tool: &'static str },
    #[error("`{command}` failed ({status}): {stderr}; {fix}")]
    Command {
        command: String,
        status: String,
        stderr: String,
        fix: &'static str,
    },
    #[error("cannot prepare {path}: {message}; check that the data disk is mounted and writable")]
    File { path: PathBuf, message: String },
    #[error(
        "storage.device {device} is not a block device; give a whole disk or partition for the homes, or remove the key to use a file on the data disk"
    )]
    NotABlockDevice { device: PathBuf },
}

/// What the step found or made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeGroup {
    pub name: String,
    /// The physical volume: the device, or the loop device of the backing file.
    pub physical_volume: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    /// True when this run created the group.
    pub created: bool,
}

/// The backing file of the group when no device is configured.
pub fn backing_file(config: &Config) -> PathBuf {
    config
        .daemon
        .data_dir
        .join("lvm")
        .join(format!("{}.img", config.storage.volume_group))
}

/// Runs an LVM or util-linux tool; LVM complains about every inherited descriptor otherwise.
async fn output(program: &str, args: &[&str]) -> Result<std::process::Output, std::io::Error> {
    Command::new(program)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(Stdio::null())
        .output()
        .await
}

async fn run(
    program: &'static str,
    args: &[&str],
    fix: &'static str,
) -> Result<String, StorageError> {
    let command = || format!("{program} {}", args.join(" "));
    let output = output(program, args).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::MissingTool { tool: program },
        _ => StorageError::Command {
            command: command(),
            status: "not started".into(),
            stderr: e.to_string(),
            fix,
        },
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(StorageError::Command {
            command: command(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            fix,
        })
    }
}

/// The group's physical volume, size and free bytes, or None when LVM does not see it (`vgs`
/// fails for an unknown group).
async fn inspect(name: &str) -> Result<Option<(String, u64, u64)>, StorageError> {
    let args = [
        "--noheadings",
        "--nosuffix",
        "--units",
        "b",
        "-o",
        "pv_name,vg_size,vg_free",
        name,
    ];
    let text = match run("vgs", &args, "").await {
        Ok(text) => text,
        Err(StorageError::Command { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(pv), Some(size), Some(free)) => Ok(Some((
            pv.to_string(),
            size.parse().unwrap_or(0),
            free.parse().unwrap_or(0),
        ))),
        _ => Ok(None),
    }
}

/// The loop device `file` is attached to, attaching it when it is not.
async fn attach(file: &Path) -> Result<String, StorageError> {
    let path = file.display().to_string();
    let attached = run(
        "losetup",
        &["--noheadings", "-O", "NAME", "-j", &path],
        "check the loop driver (modprobe loop)",
    )
    .await?;
    if let Some(device) = attached.split_whitespace().next() {
        return Ok(device.to_string());
    }
    let device = run(
        "losetup",
        &["--find", "--show", &path],
        "check the loop driver (modprobe loop) and that loop devices are free",
    )
    .await?;
    Ok(device.trim().to_string())
}

/// The sparse backing file, made once with `size` bytes.
fn ensure_file(file: &Path, size: u64) -> Result<bool, StorageError> {
    let fail = |e: std::io::Error| StorageError::File {
        path: file.to_path_buf(),
        message: e.to_string(),
    };
    if file.exists() {
        return Ok(false);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let partial = file.with_extension("img.partial");
    let handle = std::fs::File::create(&partial).map_err(fail)?;
    handle.set_len(size).map_err(fail)?;
    handle.sync_all().map_err(fail)?;
    std::fs::rename(&partial, file).map_err(fail)?;
    Ok(true)
}

/// Free bytes of the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, StorageError> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| StorageError::File {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Finds or makes the volume group. Idempotent; after a reboot it attaches the backing file
/// again and finds the group with its volumes.
pub async fn ensure_volume_group(config: &Config) -> Result<VolumeGroup, StorageError> {
    let name = config.storage.volume_group.clone();
    let device = match &config.storage.device {
        Some(device) => {
            use std::os::unix::fs::FileTypeExt;
            let meta = std::fs::metadata(device).map_err(|e| StorageError::File {
                path: device.clone(),
                message: e.to_string(),
            })?;
            if !meta.file_type().is_block_device() {
                return Err(StorageError::NotABlockDevice {
                    device: device.clone(),
                });
            }
            device.display().to_string()
        }
        None => {
            let file = backing_file(config);
            let size = match config.storage.size_gb {
                0 => {
                    let data_dir = &config.daemon.data_dir;
                    let free = free_bytes(data_dir)?;
                    ((free as f64 * FREE_SHARE) as u64) & !((1 << 20) - 1)
                }
                gb => u64::from(gb) << 30,
            };
            let made = tokio::task::spawn_blocking({
                let file = file.clone();
                move || ensure_file(&file, size)
            })
            .await
            .map_err(|e| StorageError::File {
                path: file.clone(),
                message: e.to_string(),
            })??;
            if made {
                tracing::info!(file = %file.display(), size, "made the homes' backing file");
            }
            attach(&file).await?
        }
    };
    if let Some((pv, size, free)) = inspect(&name).await? {
        return Ok(VolumeGroup {
            name,
            physical_volume: pv,
            size_bytes: size,
            free_bytes: free,
            created: false,
        });
    }
    run(
        "pvcreate",
        &["--yes", &device],
        "the device must not hold another filesystem or volume group",
    )
    .await?;
    run(
        "vgcreate",
        &[&name, &device],
        "a group of that name may exist on another device: rename storage.volume_group",
    )
    .await?;
    let (pv, size, free) = inspect(&name).await?.ok_or_else(|| StorageError::Command {
        command: format!("vgs {name}"),
        status: "not found".into(),
        stderr: "the group was created but LVM does not list it".into(),
        fix: "check the LVM configuration's device filter",
    })?;
    tracing::info!(group = %name, %pv, size, "created the homes' volume group");
    Ok(VolumeGroup {
        name,
        physical_volume: pv,
        size_bytes: size,
        free_bytes: free,
        created: true,
    })
}
