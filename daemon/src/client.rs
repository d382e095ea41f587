//! The admin API's client (reqwest), over the unix socket or over TLS with a bearer token.
//! Used by pangeoctl, the daemon's own liveness probe, the tests and the benches.
//!
//! Every request opens a connection of its own (no idle connection is kept), as a one-shot
//! command and the liveness probe want: the probe then proves that the API still accepts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::body::Bytes;
use reqwest::{Method, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {reason}; is pangeod running? (systemctl status pangeod)")]
    Connect { target: String, reason: String },
    #[error("TLS with {target} failed: {reason}")]
    Tls { target: String, reason: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the HTTP client for {target}: {reason}")]
    Setup { target: String, reason: String },
    #[error("HTTP error talking to pangeod: {0}")]
    Http(String),
    #[error("bad request: {0}")]
    Request(String),
    #[error("pangeod did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot write the download: {source}")]
    Write { source: std::io::Error },
}

/// How to reach the API: a client for the socket or for the TLS listener, with the token that
/// goes with it. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    /// `http://localhost` for the socket (the host only names it), `https://host:port` for TLS.
    base: String,
    /// What errors name: the socket's path, or `host:port`.
    target: String,
    token: Option<String>,
    tls: bool,
}

impl Transport {
    /// The unix socket at `socket`.
    pub fn unix(socket: &Path) -> Result<Self, ClientError> {
        let target = socket.display().to_string();
        let http = builder()
            .unix_socket(socket)
            .build()
            .map_err(|e| ClientError::Setup {
                target: target.clone(),
                reason: causes(&e),
            })?;
        Ok(Transport {
            http,
            base: "http://localhost".into(),
            target,
            token: None,
            tls: false,
        })
    }

    /// TLS to `host:port`, trusting only `ca_file` (the appliance's local CA, or any CA in PEM).
    pub fn tls(
        host: &str,
        port: u16,
        ca_file: &Path,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let target = format!("{host}:{port}");
        let pem = std::fs::read(ca_file).map_err(|source| ClientError::ReadFile {
            path: ca_file.to_path_buf(),
            source,
        })?;
        let bad_ca = |reason: String| ClientError::Tls {
            target: ca_file.display().to_string(),
            reason,
        };
        // As the hub client does: reqwest's own certificates, and with rustls-tls-manual-roots
        // no built-in roots, so only this CA is trusted.
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad_ca(format!("bad CA file: {}", causes(&e))))?;
        if roots.is_empty() {
            return Err(bad_ca(
                "no certificate in the CA file; give the PEM of the CA that signed pangeod's certificate".into(),
            ));
        }
        let http = roots
            .into_iter()
            .fold(builder(), |b, root| b.add_root_certificate(root))
            .build()
            .map_err(|e| ClientError::Setup {
                target: target.clone(),
                reason: causes(&e),
            })?;
        // An IPv6 literal is bracketed in a URL.
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            target.clone()
        };
        Ok(Transport {
            http,
            base: format!("https://{authority}"),
            target,
            token,
            tls: true,
        })
    }

    /// Sends one request and returns the response head; the body is read by the caller.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let request = request
            .build()
            .map_err(|e| ClientError::Request(causes(&e)))?;
        self.http.execute(request).await.map_err(|e| self.error(&e))
    }

    /// A reqwest error as the error that says what failed: the connection (naming the socket or
    /// `host:port`), the TLS handshake, or the HTTP exchange after it.
    fn error(&self, error: &reqwest::Error) -> ClientError {
        if error.is_builder() {
            return ClientError::Request(causes(error));
        }
        if !error.is_connect() {
            return ClientError::Http(causes(error));
        }
        let reason = root_cause(error);
        // A TCP connection that was made and then failed (a reset, a bad certificate) failed
        // in the TLS handshake, as reqwest connects and shakes hands in one step.
        let tcp_failed = io_error(error).is_some_and(|e| {
            use std::io::ErrorKind::*;
            matches!(
                e.kind(),
                NotFound
                    | ConnectionRefused
                    | PermissionDenied
                    | AddrNotAvailable
                    | AddrInUse
                    | HostUnreachable
                    | NetworkUnreachable
                    | TimedOut
            )
        });
        if self.tls && !tcp_failed {
            ClientError::Tls {
                target: self.target.clone(),
                reason,
            }
        } else {
            ClientError::Connect {
                target: self.target.clone(),
                reason,
            }
        }
    }
}

/// What every transport shares: no proxy from the environment (`HTTPS_PROXY` must not send the
/// admin token elsewhere), no pooled connection, no redirect.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
}

/// The first I/O error in `error`'s chain of sources.
fn io_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// The innermost cause: what a connection failed with (`Connection refused (os error 111)`,
/// `invalid peer certificate: UnknownIssuer`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The causes below reqwest's own message (which names only the URL), outermost first.
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = std::error::Error::source(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    async fn read(response: reqwest::Response, transport: &Transport) -> Result<Self, ClientError> {
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(|e| transport.error(&e))?;
        Ok(Response {
            status,
            content_type,
            body,
        })
    }
}

/// One request over the unix socket.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    call(
        &Transport::unix(socket)?,
        method,
        path,
        headers,
        body,
        timeout,
    )
    .await
}

/// One request over any transport; `timeout` bounds the whole exchange, body included.
pub async fn call(
    transport: &Transport,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let exchange = async {
        let response = transport.send(method, path, headers, body).await?;
        Response::read(response, transport).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// What a download ended with.
#[derive(Debug)]
pub enum Download {
    /// 200: the body was written to the sink, this many bytes.
    Written(u64),
    /// Any other status: the whole answer (a problem document), nothing written.
    Refused(Response),
}

/// `GET path`, streaming a 200's body into `sink` as it arrives, for bodies too large to hold
/// (a home's export). `answer` bounds the wait for the response head, `idle` each wait for
/// the next part of the body; a body that ends with an error (the server cut it) is an error.
pub async fn download<W>(
    transport: &Transport,
    path: &str,
    sink: &mut W,
    answer: Duration,
    idle: Duration,
) -> Result<Download, ClientError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut response = tokio::time::timeout(answer, transport.send(Method::GET, path, &[], None))
        .await
        .map_err(|_| ClientError::Timeout(answer))??;
    if response.status() != StatusCode::OK {
        let refused = tokio::time::timeout(answer, Response::read(response, transport))
            .await
            .map_err(|_| ClientError::Timeout(answer))??;
        return Ok(Download::Refused(refused));
    }
    let mut written = 0u64;
    loop {
        let chunk = tokio::time::timeout(idle, response.chunk())
            .await
            .map_err(|_| ClientError::Timeout(idle))?
            .map_err(|e| transport.error(&e))?;
        let Some(data) = chunk else { break };
        sink.write_all(&data)
            .await
            .map_err(|source| ClientError::Write { source })?;
        written += data.len() as u64;
    }
    sink.flush()
        .await
        .map_err(|source| ClientError::Write { source })?;
    Ok(Download::Written(written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A unix-socket server that answers each connection with `answer` once it has read a
    /// request head, then closes it.
    fn serve(dir: &Path, answer: &'static [u8]) -> PathBuf {
        let socket = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer).await;
            }
        });
        socket
    }

    #[tokio::test]
    async fn a_missing_socket_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let error = request(
            &socket,
            Method::GET,
            "/v1/status",
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
        assert!(text.contains("is pangeod running?"), "{text}");
    }

    #[tokio::test]
    async fn a_problem_answer_is_returned_whole_with_its_type() {
        let dir = tempfile::tempdir().unwrap();
        let socket = serve(
            dir.path(),
            b"HTTP/1.1 409 Conflict\r\ncontent-type: application/problem+json\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"title\":\"Nope\"}",
        );
        let response = request(
            &socket,
            Method::PATCH,
            "/v1/config",
            &[],
            Some(b"{}".to_vec()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(response.status, StatusCode::CONFLICT);
        assert_eq!(
            response.content_type.as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(response.json().unwrap()["title"], "Nope");
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("silent.sock");
        let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let error = request(
            &socket,
            Method::GET,
            "/v1/status",
            &[],
            None,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ClientError::Timeout(_)), "{error:?}");
    }

    /// `GET /v1/health` through `transport`.
    async fn health(transport: &Transport) -> Result<Response, ClientError> {
        call(
            transport,
            Method::GET,
            "/v1/health",
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
    }

    /// Downloads `/x` from a server that answers `answer`; what was written, and the outcome.
    async fn download_from(answer: &'static [u8]) -> (Vec<u8>, Result<Download, ClientError>) {
        let dir = tempfile::tempdir().unwrap();
        let transport = Transport::unix(&serve(dir.path(), answer)).unwrap();
        let mut sink = Vec::new();
        let outcome = download(
            &transport,
            "/x",
            &mut sink,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await;
        (sink, outcome)
    }

    #[tokio::test]
    async fn a_download_is_written_whole_and_one_cut_short_is_an_error() {
        let (sink, outcome) = download_from(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await;
        assert!(matches!(outcome, Ok(Download::Written(11))), "{outcome:?}");
        assert_eq!(sink, b"hello world");

        // The server closes before the last chunk: what was written is not the whole body.
        let (_, outcome) =
            download_from(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                .await;
        assert!(matches!(outcome, Err(ClientError::Http(_))), "{outcome:?}");

        // A refusal is the problem document, and nothing is written.
        let (sink, outcome) = download_from(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        )
        .await;
        assert!(
            matches!(outcome, Ok(Download::Refused(ref r)) if r.status == 404),
            "{outcome:?}"
        );
        assert!(sink.is_empty());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, "not a certificate\n").unwrap();
        let Err(error) = Transport::tls("127.0.0.1", 8443, &ca_file, None) else {
            panic!("a CA file without a certificate was taken");
        };
        let text = error.to_string();
        assert!(
            text.contains("ca.pem") && text.contains("no certificate"),
            "{text}"
        );
    }

    /// A closed port is a connection error; a listener that drops the connection before the
    /// handshake (pangeod's allowlist, or its connection limits) is a TLS error.
    #[tokio::test]
    async fn tls_tells_a_closed_port_from_a_refused_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let transport = Transport::tls("127.0.0.1", port, &ca_file, None).unwrap();
        let error = health(&transport).await.unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );

        let dropping = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = dropping.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = dropping.accept().await {
                drop(stream);
            }
        });
        let transport = Transport::tls("127.0.0.1", port, &ca_file, Some("t".into())).unwrap();
        let error = health(&transport).await.unwrap_err();
        assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("TLS with 127.0.0.1:{port} failed: ")),
            "{error}"
        );
    }

    #[test]
    fn a_ca_file_that_is_missing_is_named() {
        let error = Transport::tls("localhost", 8443, Path::new("/nonexistent/ca.pem"), None)
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/ca.pem: "),
            "{error}"
        );
    }
}
