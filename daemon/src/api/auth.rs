//! Who is asking: the unix socket peer's uid, or a named bearer token on TCP. Also the TCP
//! listener's TLS material, generated once under the state dir unless configured.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::HeaderMap;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

/// The actor recorded in events: `uid 0 (root)` or `token portal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    pub fn from_uid(uid: u32) -> Self {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|user| user.name);
        match name {
            Some(name) => Actor(format!("uid {uid} ({name})")),
            None => Actor(format!("uid {uid}")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "cannot read the API token file {path}: {source}; create it with lines of name:token, or remove api.token_file to have one generated"
    )]
    ReadTokens {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API token file {path} has no tokens; add a line name:token")]
    NoTokens { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    #[error(
        "cannot load the TLS certificate or key ({path}): {reason}; check api.tls_cert and api.tls_key"
    )]
    Tls { path: PathBuf, reason: String },
}

/// Named bearer tokens. Compared through their SHA-256 digests in constant time.
#[derive(Clone)]
pub struct Tokens {
    entries: Arc<Vec<(String, [u8; 32])>>,
    pub path: PathBuf,
}

impl Tokens {
    /// Reads `name:token` lines from `path`; with no configured file, generates
    /// `<state_dir>/api-token` (mode 0600) with one token named `portal` on first boot.
    pub fn load_or_generate(
        configured: Option<&Path>,
        state_dir: &Path,
    ) -> Result<Self, AuthError> {
        let path = match configured {
            Some(path) => path.to_path_buf(),
            None => {
                let path = state_dir.join("api-token");
                if !path.exists() {
                    let token = hex(&random_bytes::<32>()?);
                    write_private(&path, format!("portal:{token}\n").as_bytes())?;
                    tracing::info!(path = %path.display(), "generated the admin API token");
                }
                path
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| AuthError::ReadTokens {
            path: path.clone(),
            source,
        })?;
        let entries: Vec<_> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| match line.split_once(':') {
                Some((name, token)) => (name.trim().to_string(), sha256(token.trim().as_bytes())),
                None => ("token".to_string(), sha256(line.as_bytes())),
            })
            .collect();
        if entries.is_empty() {
            return Err(AuthError::NoTokens { path });
        }
        Ok(Self {
            entries: Arc::new(entries),
            path,
        })
    }

    /// The name of the token in `Authorization: Bearer <token>`, if it is one of ours.
    pub fn check(&self, headers: &HeaderMap) -> Option<&str> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        let given = sha256(token.trim().as_bytes());
        let mut found = None;
        // Every entry is compared, so the time does not depend on which one matched.
        for (name, expected) in self.entries.iter() {
            if bool::from(given.ct_eq(expected)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The TCP listener's TLS configuration and what status shows about it.
pub struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the server certificate, `AB:CD:...`.
    pub fingerprint: String,
    pub cert_path: PathBuf,
    /// The generated CA that signed the server certificate, for clients to trust.
    pub ca_path: Option<PathBuf>,
}

/// Loads the configured certificate, or generates a local CA and a server certificate for
/// `names` under `<state_dir>/tls/` once, and keeps them.
pub fn tls_material(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
    names: &[String],
) -> Result<TlsMaterial, AuthError> {
    let (cert_path, key_path, ca_path) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_path_buf(), key.to_path_buf(), None),
        _ => {
            let dir = state_dir.join("tls");
            let paths = (
                dir.join("server.pem"),
                dir.join("server.key"),
                dir.join("ca.pem"),
            );
            if !paths.0.exists() || !paths.1.exists() {
                generate_certificates(&dir, names)?;
            }
            (paths.0, paths.1, Some(paths.2))
        }
    };
    let tls_error = |path: &Path, reason: String| AuthError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = std::fs::read(&cert_path).map_err(|e| tls_error(&cert_path, e.to_string()))?;
    let key_pem = std::fs::read(&key_path).map_err(|e| tls_error(&key_path, e.to_string()))?;
    let certs: Vec<_> = rustls_pemfile_certs(&cert_pem).map_err(|e| tls_error(&cert_path, e))?;
    let Some(first) = certs.first() else {
        return Err(tls_error(&cert_path, "no certificate in the file".into()));
    };
    let fingerprint = digest(&SHA256, first.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_error(&key_path, format!("no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&cert_path, e.to_string()))?;
    Ok(TlsMaterial {
        config: Arc::new(config),
        fingerprint,
        cert_path,
        ca_path,
    })
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

fn generate_certificates(dir: &Path, names: &[String]) -> Result<(), AuthError> {
    let generate = |reason: rcgen::Error| AuthError::Generate {
        what: "the admin API certificate",
        reason: reason.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|source| AuthError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pangeod local CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    sans.extend(names.iter().cloned());
    sans.dedup();
    let server_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut params = rcgen::CertificateParams::new(sans).map_err(generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pangeod admin API");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).map_err(generate)?;

    write_private(
        &dir.join("server.key"),
        server_key.serialize_pem().as_bytes(),
    )?;
    write_public(&dir.join("server.pem"), server_cert.pem().as_bytes())?;
    write_public(&dir.join("ca.pem"), ca_cert.pem().as_bytes())?;
    tracing::info!(dir = %dir.display(), "generated the admin API's local CA and certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    write_mode(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    write_mode(path, bytes, 0o644)
}

/// Writes through a temp file and a rename, so a crash never leaves half a key.
fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuthError> {
    let error = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Generate {
            what: "a token",
            reason: "the system random source failed".into(),
        })?;
    Ok(bytes)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_file_is_private_and_checks_in_both_directions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::load_or_generate(None, dir.path()).unwrap();
        let mode = std::fs::metadata(&tokens.path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&tokens.path).unwrap();
        let token = text.trim().strip_prefix("portal:").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert_eq!(tokens.check(&headers), Some("portal"));
        headers.insert("authorization", format!("Bearer {token}x").parse().unwrap());
        assert_eq!(tokens.check(&headers), None);
        headers.remove("authorization");
        assert_eq!(tokens.check(&headers), None);
        // A second start keeps the same token.
        let again = Tokens::load_or_generate(None, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&again.path).unwrap(), text);
    }

    #[test]
    fn generated_tls_material_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["192.0.2.10".to_string()];
        let first = tls_material(None, None, dir.path(), &names).unwrap();
        let second = tls_material(None, None, dir.path(), &names).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        assert!(first.ca_path.unwrap().exists());
    }
}
