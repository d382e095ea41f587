//! What the image bundles for an air-gapped k3s: the k3s binary, its air-gap image tarballs,
//! the chart archives and the charts' container images, all pinned in `images/manifest.toml`,
//! which the image build installs as `/usr/share/pangeo/manifest.toml`. The build also records
//! the sha256 of every file it installed in `/usr/share/pangeo/installed.sha256`, so an image
//! tarball (pinned by registry digest, not by file hash) is checked too.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const MANIFEST_PATH: &str = "/usr/share/pangeo/manifest.toml";
pub const INSTALLED_SUMS_PATH: &str = "/usr/share/pangeo/installed.sha256";
/// Where the image build puts the air-gap image tarballs. k3s imports tarballs from
/// `<data-dir>/agent/images` at start; its data dir is on the data disk, so [`link_into`]
/// links them there.
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
/// Where the image build puts the chart archives; k3s serves `<data-dir>/server/static/charts`
/// at `https://<api>/static/charts/`, which the HelmCharts name.
pub const CHARTS_DIR: &str = "/usr/share/pangeo/charts";
/// The marker of a value not yet pinned (see the manifest's header).
const UNVERIFIED: &str = "TODO-verify";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error(
        "k3s is not bundled in this image: {0} is missing. Build the image with `images/build --artifacts DIR`, where DIR was filled by `images/fetch-artifacts DIR` on a machine with internet"
    )]
    NotBundled(PathBuf),
    #[error("cannot read {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error(
        "the bundled artifacts do not match the image manifest: {}; the image is damaged: rebuild it, or boot the previous image version",
        problems.join("; ")
    )]
    Mismatch { problems: Vec<String> },
    #[error(
        "cannot link the bundled {what} into k3s's data dir at {path}: {message}; check that the data disk is mounted and writable"
    )]
    Link {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// What [`link_into`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linked {
    pub images: usize,
    pub charts: usize,
    /// Links to files a previous image had and this one does not.
    pub removed: usize,
}

/// Links the image's air-gap tarballs and chart archives (under `root`, `/` on the appliance)
/// into k3s's data dir, where k3s looks for them: `agent/images/` and `server/static/charts/`.
/// Symlinks, so nothing is copied onto the data disk; idempotent; a link left by an older image
/// whose file is gone is removed; a regular file someone put there is left alone.
pub fn link_into(root: &Path, data_dir: &Path) -> Result<Linked, BundleError> {
    let (images, stale_images) = link_dir(
        "image tarballs",
        &root.join(IMAGES_DIR.trim_start_matches('/')),
        &data_dir.join("agent/images"),
        &[".tar", ".tar.zst", ".tar.gz", ".tar.lz4"],
    )?;
    let (charts, stale_charts) = link_dir(
        "chart archives",
        &root.join(CHARTS_DIR.trim_start_matches('/')),
        &data_dir.join("server/static/charts"),
        &[".tgz"],
    )?;
    Ok(Linked {
        images,
        charts,
        removed: stale_images + stale_charts,
    })
}

/// Links each file of `source` ending in one of `suffixes` into `dest`, and removes links in
/// `dest` into `source` whose file is gone (also when `source` itself is gone: an image
/// without artifacts). Returns (links in place, links removed).
fn link_dir(
    what: &'static str,
    source: &Path,
    dest: &Path,
    suffixes: &[&str],
) -> Result<(usize, usize), BundleError> {
    let fail = |path: &Path, error: std::io::Error| BundleError::Link {
        what,
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    if source == dest {
        return Ok((0, 0));
    }
    let mut linked = 0;
    match std::fs::read_dir(source) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(fail(source, error)),
        Ok(entries) => {
            std::fs::create_dir_all(dest).map_err(|e| fail(dest, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| fail(source, e))?;
                let name = entry.file_name();
                if !suffixes.iter().any(|s| name.to_string_lossy().ends_with(s)) {
                    continue;
                }
                let target = entry.path();
                let link = dest.join(&name);
                match std::fs::symlink_metadata(&link) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                            linked += 1;
                            continue;
                        }
                        std::fs::remove_file(&link).map_err(|e| fail(&link, e))?;
                    }
                    Ok(_) => {
                        tracing::warn!(path = %link.display(), "a file that is not pangeod's link is in k3s's bundle dir; left as it is");
                        continue;
                    }
                    Err(_) => {}
                }
                std::os::unix::fs::symlink(&target, &link).map_err(|e| fail(&link, e))?;
                linked += 1;
            }
        }
    }
    let mut removed = 0;
    let entries = match std::fs::read_dir(dest) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((linked, 0)),
        other => other.map_err(|e| fail(dest, e))?,
    };
    for entry in entries {
        let link = entry.map_err(|e| fail(dest, e))?.path();
        let Ok(target) = std::fs::read_link(&link) else {
            continue;
        };
        if target.starts_with(source) && !target.exists() {
            std::fs::remove_file(&link).map_err(|e| fail(&link, e))?;
            removed += 1;
        }
    }
    Ok((linked, removed))
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    file: Vec<FileEntry>,
    #[serde(default)]
    image: Vec<ImageEntry>,
}

#[derive(Debug, Deserialize)]
struct FileEntry {
    name: String,
    sha256: String,
    install: String,
}

#[derive(Debug, Deserialize)]
struct ImageEntry {
    #[serde(rename = "ref")]
    reference: String,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// False on a machine with a k3s binary but no image manifest (a dev machine): nothing
    /// could be checked.
    pub manifest: bool,
    pub files: usize,
    pub images: usize,
    /// Entries whose hash the manifest does not pin yet (checked against the build's record).
    pub unpinned: usize,
}

/// The tarball name the image build gives an image (`images/lib/manifest.py image_file`).
pub fn image_file_name(reference: &str) -> String {
    let safe: String = reference
        .chars()
        .map(|c| if matches!(c, '/' | ':' | '@') { '_' } else { c })
        .collect();
    format!("{safe}.tar")
}

/// Checks every bundled file under `root` (`/` on the appliance) against the manifest.
/// Hashes every byte: run it off the async threads.
pub fn check(root: &Path, k3s_binary: &Path) -> Result<BundleReport, BundleError> {
    let under = |path: &str| root.join(path.trim_start_matches('/'));
    let binary = under(&k3s_binary.to_string_lossy());
    if !binary.exists() {
        return Err(BundleError::NotBundled(k3s_binary.to_path_buf()));
    }
    let manifest_path = under(MANIFEST_PATH);
    if !manifest_path.exists() {
        return Ok(BundleReport {
            manifest: false,
            files: 0,
            images: 0,
            unpinned: 0,
        });
    }
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| BundleError::Manifest {
        path: PathBuf::from(MANIFEST_PATH),
        message: e.to_string(),
    })?;
    let manifest: Manifest = toml::from_str(&text).map_err(|e| BundleError::Manifest {
        path: PathBuf::from(MANIFEST_PATH),
        message: e.to_string(),
    })?;
    let recorded = read_sums(&under(INSTALLED_SUMS_PATH));

    let mut problems = Vec::new();
    let mut unpinned = 0;
    let mut verify = |label: &str, install: &str, pinned: Option<&str>| {
        let path = under(install);
        let expected = match pinned {
            Some(sum) if sum != UNVERIFIED => Some(sum.to_string()),
            _ => {
                unpinned += 1;
                recorded.get(install).cloned()
            }
        };
        let Some(expected) = expected else {
            problems.push(format!(
                "{label}: no sha256 for {install} in the manifest or in {INSTALLED_SUMS_PATH}"
            ));
            return;
        };
        match sha256_file(&path) {
            Ok(actual) if actual.eq_ignore_ascii_case(&expected) => {}
            Ok(actual) => problems.push(format!(
                "{label}: {install} has sha256 {actual}, the manifest pins {expected}"
            )),
            Err(error) => problems.push(format!("{label}: {install}: {error}")),
        }
    };
    for file in &manifest.file {
        verify(&file.name, &file.install, Some(&file.sha256));
    }
    for image in &manifest.image {
        let install = format!("{IMAGES_DIR}/{}", image_file_name(&image.reference));
        verify(&image.reference, &install, None);
    }
    if !problems.is_empty() {
        return Err(BundleError::Mismatch { problems });
    }
    Ok(BundleReport {
        manifest: true,
        files: manifest.file.len(),
        images: manifest.image.len(),
        unpinned,
    })
}

/// `sha256sum` output: `<hex>  <absolute path>` per line.
fn read_sums(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (sum, file) = line.split_once(char::is_whitespace)?;
            Some((
                file.trim().trim_start_matches('*').to_string(),
                sum.to_string(),
            ))
        })
        .collect()
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_linked_where_k3s_looks_and_stale_links_go() {
        let root = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let put = |path: &str| {
            let p = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        };
        put(&format!("{IMAGES_DIR}/k3s-airgap-images-amd64.tar.zst"));
        put(&format!(
            "{IMAGES_DIR}/quay.io_jupyterhub_k8s-hub_4.4.0.tar"
        ));
        put(&format!("{CHARTS_DIR}/jupyterhub-4.4.0.tgz"));
        put(&format!("{CHARTS_DIR}/index.toml"));
        let linked = link_into(root.path(), data.path()).unwrap();
        assert_eq!((linked.images, linked.charts, linked.removed), (2, 1, 0));
        let chart = data
            .path()
            .join("server/static/charts/jupyterhub-4.4.0.tgz");
        assert_eq!(
            std::fs::read_link(&chart).unwrap(),
            root.path()
                .join("usr/share/pangeo/charts/jupyterhub-4.4.0.tgz")
        );
        assert!(!data.path().join("server/static/charts/index.toml").exists());
        // Idempotent.
        assert_eq!(link_into(root.path(), data.path()).unwrap(), linked);
        // A newer image without the old chart: its link goes; someone's own file stays.
        std::fs::write(data.path().join("server/static/charts/own.tgz"), "mine").unwrap();
        std::fs::remove_file(
            root.path()
                .join("usr/share/pangeo/charts/jupyterhub-4.4.0.tgz"),
        )
        .unwrap();
        put(&format!("{CHARTS_DIR}/jupyterhub-4.5.0.tgz"));
        let linked = link_into(root.path(), data.path()).unwrap();
        assert_eq!((linked.charts, linked.removed), (1, 1));
        assert!(std::fs::symlink_metadata(&chart).is_err());
        assert!(
            data.path()
                .join("server/static/charts/jupyterhub-4.5.0.tgz")
                .exists()
        );
        assert_eq!(
            std::fs::read_to_string(data.path().join("server/static/charts/own.tgz")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn an_image_without_artifacts_links_nothing() {
        let root = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        assert_eq!(
            link_into(root.path(), data.path()).unwrap(),
            Linked::default()
        );
    }

    const SUM_OF_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn image_root(manifest: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let put = |path: &str, text: &str| {
            let p = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("/usr/local/bin/k3s", "abc");
        put(MANIFEST_PATH, manifest);
        put(
            &format!("{IMAGES_DIR}/quay.io_jupyterhub_k8s-hub_4.4.0.tar"),
            "abc",
        );
        put(
            INSTALLED_SUMS_PATH,
            &format!("{SUM_OF_ABC}  {IMAGES_DIR}/quay.io_jupyterhub_k8s-hub_4.4.0.tar\n"),
        );
        root
    }

    fn manifest(k3s_sum: &str) -> String {
        format!(
            "schema = 1\n[[file]]\nname = \"k3s\"\nsha256 = \"{k3s_sum}\"\ninstall = \"/usr/local/bin/k3s\"\n\n[[image]]\nref = \"quay.io/jupyterhub/k8s-hub:4.4.0\"\ndigest = \"TODO-verify\"\n"
        )
    }

    #[test]
    fn a_matching_bundle_passes() {
        let root = image_root(&manifest(SUM_OF_ABC));
        let report = check(root.path(), Path::new("/usr/local/bin/k3s")).unwrap();
        assert_eq!(
            report,
            BundleReport {
                manifest: true,
                files: 1,
                images: 1,
                unpinned: 1
            }
        );
    }

    #[test]
    fn a_changed_file_is_named_with_both_hashes() {
        let root = image_root(&manifest(&"0".repeat(64)));
        let error = check(root.path(), Path::new("/usr/local/bin/k3s")).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("k3s: /usr/local/bin/k3s has sha256 ba7816bf"),
            "{text}"
        );
        assert!(text.contains(&"0".repeat(64)), "{text}");
    }

    #[test]
    fn a_missing_image_tarball_is_named() {
        let root = image_root(&manifest(SUM_OF_ABC));
        std::fs::remove_file(
            root.path()
                .join(IMAGES_DIR.trim_start_matches('/'))
                .join("quay.io_jupyterhub_k8s-hub_4.4.0.tar"),
        )
        .unwrap();
        let text = check(root.path(), Path::new("/usr/local/bin/k3s"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("quay.io/jupyterhub/k8s-hub:4.4.0"), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn no_k3s_binary_says_it_is_not_bundled_and_how_to_bundle_it() {
        let root = tempfile::tempdir().unwrap();
        let error = check(root.path(), Path::new("/usr/local/bin/k3s")).unwrap_err();
        assert_eq!(error, BundleError::NotBundled("/usr/local/bin/k3s".into()));
        assert!(error.to_string().contains("images/fetch-artifacts"));
    }

    #[test]
    fn a_k3s_without_a_manifest_is_reported_unverified() {
        let root = tempfile::tempdir().unwrap();
        let k3s = root.path().join("usr/local/bin/k3s");
        std::fs::create_dir_all(k3s.parent().unwrap()).unwrap();
        std::fs::write(&k3s, "abc").unwrap();
        let report = check(root.path(), Path::new("/usr/local/bin/k3s")).unwrap();
        assert!(!report.manifest);
        assert_eq!(report.files + report.images, 0);
    }

    #[test]
    fn image_file_names_match_the_image_build() {
        assert_eq!(
            image_file_name("registry.k8s.io/pause:3.10@sha256:ab"),
            "registry.k8s.io_pause_3.10_sha256_ab.tar"
        );
    }
}
