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
/// Open connections on the unix socket; more wait in the kernel's backlog. The socket's slots
/// are its own, so a flood on the TCP listener never locks a local admin out.
const MAX_CONNECTIONS: usize = 512;
/// Connections on the TCP listener, from the accept on (the TLS handshake included): over
/// this, a new connection is closed at once, so a flood costs one file descriptor for a
/// moment, never a slot of the unix socket's or the daemon's descriptor limit.
const MAX_TCP_CONNECTIONS: usize = 256;
/// Connections from one source address, so that one client cannot take every TCP slot.
const MAX_TCP_PER_SOURCE: usize = 32;
/// A refused source is logged once per window, with the count of what was refused.
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(60);
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
        if let Some(dir) = path.parent() {
            open_dir_to_group(dir, gid.as_raw())?;
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(permissions)?;
    Ok(listener)
}

/// Lets the socket's group reach the socket: its directory (systemd's `RuntimeDirectory`, made
/// root-only by `RuntimeDirectoryMode=0750`) gets the group and the group's search bit. A
/// directory that others may already enter (`/run`, `/tmp`) is left as it is, and so is one
/// pangeod does not own.
fn open_dir_to_group(dir: &Path, gid: u32) -> Result<(), ListenError> {
    use std::os::unix::fs::MetadataExt;
    let permissions = |source| ListenError::Permissions {
        path: dir.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(permissions)?;
    if meta.mode() & 0o001 != 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    std::os::unix::fs::chown(dir, None, Some(gid)).map_err(permissions)?;
    let mode = (meta.mode() & 0o7777) | 0o010;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(permissions)
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
    let admission = Arc::new(Admission::new(MAX_TCP_CONNECTIONS, MAX_TCP_PER_SOURCE));
    let mut refusals = RefusalLog::default();
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
            refusals.refused(source, Refusal::NotAllowed, std::time::Instant::now());
            drop(stream);
            continue;
        }
        let slot = match admission.admit(source) {
            Ok(slot) => slot,
            Err(refusal) => {
                refusals.refused(source, refusal, std::time::Instant::now());
                drop(stream);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let tokens = tokens.clone();
        let graceful = graceful.watcher();
        tokio::spawn(async move {
            // Held from before the handshake to the connection's end.
            let _slot = slot;
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
            let connection = http1().serve_connection(TokioIo::new(tls), service);
            if let Err(error) = graceful.watch(connection).await {
                tracing::debug!(%peer, %error, "admin TCP connection ended with an error");
            }
        });
    }
    drain(graceful).await;
}

/// Why a TCP connection was closed before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotAllowed,
    SourceFull,
    ListenerFull,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "the source is outside api.admin_allowed_cidrs",
            Refusal::SourceFull => "the source already holds its maximum of connections (32)",
            Refusal::ListenerFull => "the TCP listener holds its maximum of connections (256)",
        }
    }
}

/// Bounds the TCP listener's connections, in total and per source, from the accept on.
struct Admission {
    total: Arc<Semaphore>,
    per_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    max_per_source: usize,
}

/// A connection's place; given back when the connection ends.
struct Slot {
    admission: Arc<Admission>,
    source: std::net::IpAddr,
    _total: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

impl Admission {
    fn new(total: usize, max_per_source: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_source: std::sync::Mutex::new(std::collections::HashMap::new()),
            max_per_source,
        }
    }

    fn counts(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        // Each critical section is one map update: a poisoned lock holds consistent data.
        self.per_source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn admit(self: &Arc<Self>, source: std::net::IpAddr) -> Result<Slot, Refusal> {
        let mut counts = self.counts();
        let count = counts.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            return Err(Refusal::SourceFull);
        }
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            if *count == 0 {
                counts.remove(&source);
            }
            return Err(Refusal::ListenerFull);
        };
        *count += 1;
        drop(counts);
        Ok(Slot {
            admission: self.clone(),
            source,
            _total: permit,
        })
    }
}

/// Logs refused connections once per source and window, with a count, so that a flood cannot
/// fill the journal (or trip its rate limit and hide pangeod's other messages).
#[derive(Default)]
struct RefusalLog {
    sources: std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u64, Refusal)>,
}

impl RefusalLog {
    /// The most sources remembered; older windows are forgotten first.
    const MAX_SOURCES: usize = 4096;

    /// Records a refusal; returns whether it was logged.
    fn refused(
        &mut self,
        source: std::net::IpAddr,
        refusal: Refusal,
        now: std::time::Instant,
    ) -> bool {
        if let Some((since, count, reason)) = self.sources.get_mut(&source) {
            if now.duration_since(*since) < REFUSAL_LOG_WINDOW {
                *count += 1;
                return false;
            }
            if *count > 1 {
                tracing::warn!(
                    %source,
                    refused = *count,
                    reason = reason.reason(),
                    "admin API connections refused in the last minute"
                );
            }
        }
        if self.sources.len() >= Self::MAX_SOURCES {
            self.sources
                .retain(|_, (since, _, _)| now.duration_since(*since) < REFUSAL_LOG_WINDOW);
        }
        self.sources.insert(source, (now, 1, refusal));
        tracing::warn!(
            %source,
            reason = refusal.reason(),
            "admin API connection refused (further refusals of this source are counted and logged once a minute)"
        );
        true
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn admission_bounds_each_source_and_the_total() {
        let admission = Arc::new(Admission::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refusal::SourceFull));
        let _b1 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(c).err(), Some(Refusal::ListenerFull));
        // A refused source leaves no count behind, and an ended connection frees its place.
        assert!(!admission.counts().contains_key(&c));
        drop(a1);
        let _c1 = admission.admit(c).unwrap();
        assert_eq!(admission.counts().get(&a), Some(&1));
    }

    #[test]
    fn refusals_are_logged_once_per_source_and_window() {
        let mut log = RefusalLog::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = std::time::Instant::now();
        assert!(log.refused(a, Refusal::NotAllowed, t0));
        let logged = (1..3661)
            .filter(|i| log.refused(a, Refusal::NotAllowed, t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(logged, 0, "one line for a flood within the window");
        assert_eq!(log.sources[&a].1, 3661);
        assert!(
            log.refused(b, Refusal::NotAllowed, t0),
            "each source has its own window"
        );
        assert!(log.refused(a, Refusal::NotAllowed, t0 + REFUSAL_LOG_WINDOW));
        assert_eq!(log.sources[&a].1, 1, "a new window counts afresh");
    }
}
