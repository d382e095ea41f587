//! The admin API. It owns no state: handlers read the boot status and the config through
//! watch channels, and hand changes to the boot runner and the state module.

mod problem;
mod routes;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use tokio::net::UnixListener;

use crate::boot::BootHandle;
use crate::state::State;

pub use problem::Problem;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub boot: BootHandle,
    pub state: Arc<State>,
    pub started: Instant,
}

pub fn router(app: AppState) -> Router {
    routes::router().with_state(app)
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot create the socket directory {path}: {source}; check api.socket")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another process is serving the admin socket {path}; stop it, or set a different api.socket"
    )]
    InUse { path: PathBuf },
    #[error(
        "cannot bind the admin socket {path}: {source}; check api.socket and its directory's permissions"
    )]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "api.socket_group: no group named \"{group}\" exists; create it (groupadd {group}) or remove api.socket_group"
    )]
    NoSuchGroup { group: String },
    #[error("cannot set the owner or mode of {path}: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the admin socket with mode 0660 and the configured group. A stale socket file left by
/// a crash is replaced; a live one is refused.
pub async fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, ListenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ListenError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::InUse {
                path: path.to_path_buf(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ListenError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let permissions = |source| ListenError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    if let Some(group) = group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| ListenError::NoSuchGroup {
                group: group.to_string(),
            })?
            .gid;
        std::os::unix::fs::chown(path, None, Some(gid.as_raw())).map_err(permissions)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(permissions)?;
    Ok(listener)
}
