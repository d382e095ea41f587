//! The directory's credentials as values through the admin API.
//!
//! The API changes settings, never the machine: no path-valued key is updatable through it,
//! because a path lets a token holder point pangeod at any file on the VM (`/etc/shadow` as the
//! bind password, sent to a server of their choosing). The bind password and the CA certificate
//! are accepted as values instead (`freeipa.password`, `freeipa.ca_pem`): write-only, never
//! returned, kept by pangeod as files of its own (mode 0600) under `<state_dir>/credentials/`.
//! The API overlay then points `freeipa.password_file` / `freeipa.ca_file` at those files, so
//! everything downstream reads the credentials the one way it always has.
//!
//! A change of the server or of the CA through the API must carry the password in the same
//! request, so the stored password is never sent to a server it was not given for.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The write-only keys of the `freeipa` section.
pub const PASSWORD_KEY: &str = "password";
pub const CA_PEM_KEY: &str = "ca_pem";

/// The largest accepted bind password and CA bundle.
/// The longest password taken, in characters (the OpenAPI document's `maxLength`).
pub(crate) const MAX_PASSWORD_CHARS: usize = 1024;
const MAX_CA_PEM_BYTES: usize = 64 * 1024;

/// A credential value that cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{key} {problem}; {fix}")]
    Invalid {
        key: &'static str,
        problem: String,
        fix: &'static str,
    },
    #[error("cannot store {key} under {}: {source}; check that the state directory is writable and not full", dir.display())]
    Write {
        key: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl CredentialError {
    /// The API key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            CredentialError::Invalid { key, .. } | CredentialError::Write { key, .. } => key,
        }
    }
}

fn full_key(key: &str) -> &'static str {
    if key == CA_PEM_KEY {
        "freeipa.ca_pem"
    } else {
        "freeipa.password"
    }
}

/// The directory pangeod keeps the credentials in.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("credentials")
}

/// Checks a bind password given as a value.
pub fn check_password(value: &serde_json::Value) -> Result<&str, CredentialError> {
    let invalid = |problem: &str| CredentialError::Invalid {
        key: "freeipa.password",
        problem: problem.to_string(),
        fix: "give the sync account's password as a JSON string",
    };
    let serde_json::Value::String(password) = value else {
        return Err(invalid("must be a string"));
    };
    if password.is_empty() {
        return Err(invalid("is empty"));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(invalid("is longer than 1024 characters"));
    }
    if password.chars().any(char::is_control) {
        return Err(invalid(
            "contains a control character (a newline, tab or escape)",
        ));
    }
    Ok(password)
}

/// Checks a CA certificate given as PEM: one or more certificates that parse.
pub fn check_ca_pem(value: &serde_json::Value) -> Result<&str, CredentialError> {
    use rustls::pki_types::pem::PemObject;
    let invalid = |problem: String| CredentialError::Invalid {
        key: "freeipa.ca_pem",
        problem,
        fix: "give the PEM text of the CA that signed FreeIPA's certificate (-----BEGIN CERTIFICATE----- ...)",
    };
    let serde_json::Value::String(pem) = value else {
        return Err(invalid("must be a string".into()));
    };
    if pem.len() > MAX_CA_PEM_BYTES {
        return Err(invalid("is larger than 64 KiB".into()));
    }
    let mut count = 0;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| invalid(format!("is not valid PEM ({e})")))?;
        webpki_check(&cert).map_err(invalid)?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("holds no certificate".into()));
    }
    Ok(pem)
}

/// A certificate that a root store accepts as a trust anchor.
fn webpki_check(cert: &rustls::pki_types::CertificateDer<'_>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.clone())
        .map_err(|e| format!("holds a certificate that cannot be a CA ({e})"))
}

/// Writes `value` to a new file of pangeod's own (0600, synced) and returns its path. Each
/// value gets a new name, so the config in force keeps reading its own file until the new
/// revision is stored.
pub fn store(state_dir: &Path, key: &'static str, value: &str) -> Result<PathBuf, CredentialError> {
    let dir = dir(state_dir);
    let io = |source| CredentialError::Write {
        key: full_key(key),
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| io(std::io::Error::other("no randomness")))?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let name = match key {
        CA_PEM_KEY => format!("freeipa-ca.{suffix}.pem"),
        _ => format!("freeipa-{key}.{suffix}"),
    };
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    file.write_all(value.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(path)
}

/// Removes the credential files that `overlay` no longer names (after a new revision is
/// stored). Errors only leave a stale file behind, so they are logged, not returned.
pub fn prune(state_dir: &Path, overlay: &serde_json::Value) {
    let dir = dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let in_use: Vec<&str> = ["password_file", "ca_file"]
        .iter()
        .filter_map(|key| overlay["freeipa"][key].as_str())
        .collect();
    for entry in entries.flatten() {
        let path = entry.path();
        if !in_use.iter().any(|used| Path::new(used) == path)
            && let Err(error) = std::fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), %error, "cannot remove an unused credential file");
        }
    }
}

/// The patch as recorded in the event log: write-only values are replaced by a marker.
pub fn redacted(patch: &serde_json::Value) -> serde_json::Value {
    let mut patch = patch.clone();
    if let Some(freeipa) = patch.get_mut("freeipa").and_then(|v| v.as_object_mut()) {
        for key in [PASSWORD_KEY, CA_PEM_KEY] {
            if let Some(value) = freeipa.get_mut(key)
                && !value.is_null()
            {
                *value = serde_json::Value::String("(write-only: set)".into());
            }
        }
    }
    patch
}
