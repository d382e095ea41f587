//! The listeners: the unix socket for local admins, and the optional TLS listener for the portal,
//! with a source allowlist and bearer tokens. Each connection gets a header-read timeout, so a
//! slow client holds one connection, never the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::Problem;
use super::auth::{Actor, Tokens};

/// A client must send its request headers within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
    #[error("cannot listen on {addr}: {source}; check api.listen")]
    BindTcp {
        addr: SocketAddr,
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

pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::BindTcp { addr, source })
}

/// Serves the unix socket; the actor of each request is the peer's uid.
pub async fn serve_unix(listener: UnixListener, router: Router, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let actor = match stream.peer_cred() {
            Ok(cred) => Actor::from_uid(cred.uid()),
            Err(_) => Actor("unknown local peer".into()),
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(actor.clone());
            let router = router.clone();
            async move { router.oneshot(request.map(Body::new)).await }
        });
        spawn_connection(stream, service, &graceful, &slots);
    }
    drain(graceful).await;
}

/// Serves TLS on TCP: sources outside the allowlist are dropped before the handshake, and every
/// request but `/v1/health` needs a bearer token.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    allowed: Vec<IpNet>,
    tokens: Tokens,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let source = peer.ip().to_canonical();
        if !allowed.iter().any(|net| net.contains(&source)) {
            tracing::warn!(%peer, "admin API connection refused: the source is outside api.admin_allowed_cidrs");
            drop(stream);
            continue;
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        let tokens = tokens.clone();
        let graceful = graceful.watcher();
        let slots = slots.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake failed (plain HTTP on the TLS port?)");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let router = router.clone();
                let name = tokens.check(request.headers()).map(str::to_string);
                async move {
                    let open = request.uri().path() == "/v1/health";
                    match name {
                        Some(name) => {
                            request
                                .extensions_mut()
                                .insert(Actor(format!("token {name}")));
                        }
                        None if open => {
                            request.extensions_mut().insert(Actor("anonymous".into()));
                        }
                        None => {
                            return Ok::<_, Infallible>(unauthorized(
                                request.headers().contains_key(header::AUTHORIZATION),
                            ));
                        }
                    }
                    router.oneshot(request.map(Body::new)).await
                }
            });
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let connection = http1().serve_connection(TokioIo::new(tls), service);
            if let Err(error) = graceful.watch(connection).await {
                tracing::debug!(%peer, %error, "admin TCP connection ended with an error");
            }
        });
    }
    drain(graceful).await;
}

fn unauthorized(had_header: bool) -> Response<Body> {
    use axum::response::IntoResponse;
    let detail = if had_header {
        "the bearer token is not valid; use a token from the API token file"
    } else {
        "send Authorization: Bearer <token>; the token is in the API token file (api.token_file, or api-token in the state dir)"
    };
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Not authenticated",
        detail,
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
}

fn spawn_connection<I, S>(io: I, service: S, graceful: &GracefulShutdown, slots: &Arc<Semaphore>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let watcher = graceful.watcher();
    let slots = slots.clone();
    tokio::spawn(async move {
        let Ok(_slot) = slots.acquire_owned().await else {
            return;
        };
        let connection = http1().serve_connection(TokioIo::new(io), service);
        if let Err(error) = watcher.watch(connection).await {
            tracing::debug!(%error, "admin connection ended with an error");
        }
    });
}

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin API connections did not close in time");
    }
}
