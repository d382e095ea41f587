//! A small HTTP/1 client for the admin API, over the unix socket or over TLS with a bearer
//! token. Used by pangeoctl, the daemon's own liveness probe, and the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {source}; is pangeod running? (systemctl status pangeod)")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("TLS with {target} failed: {reason}")]
    Tls { target: String, reason: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP error talking to pangeod: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("pangeod did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot write the download: {source}")]
    Write { source: std::io::Error },
}

/// How to reach the API.
#[derive(Clone)]
pub enum Transport {
    Unix(PathBuf),
    Tls {
        host: String,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        token: Option<String>,
    },
}

impl Transport {
    /// TLS to `host:port`, trusting `ca_file` (the appliance's local CA, or any CA in PEM).
    pub fn tls(
        host: &str,
        port: u16,
        ca_file: &Path,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(ca_file).map_err(|source| ClientError::ReadFile {
            path: ca_file.to_path_buf(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ClientError::Tls {
                target: ca_file.display().to_string(),
                reason: format!("bad CA file: {e}"),
            })?;
            roots.add(cert).map_err(|e| ClientError::Tls {
                target: ca_file.display().to_string(),
                reason: format!("unusable CA certificate: {e}"),
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls {
                target: host.to_string(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Transport::Tls {
            host: host.to_string(),
            port,
            tls: Arc::new(config),
            token,
        })
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
}

/// One request over the unix socket on a fresh connection.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    call(
        &Transport::Unix(socket.to_path_buf()),
        method,
        path,
        headers,
        body,
        timeout,
    )
    .await
}

/// A connection that hyper can speak HTTP/1 over: the unix socket, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens a connection over `transport`, with the token that goes with it.
async fn connect(transport: &Transport) -> Result<(Box<dyn Io>, Option<&str>), ClientError> {
    match transport {
        Transport::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|source| ClientError::Connect {
                    target: socket.display().to_string(),
                    source,
                })?;
            Ok((Box::new(stream), None))
        }
        Transport::Tls {
            host,
            port,
            tls,
            token,
        } => {
            let target = format!("{host}:{port}");
            let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|source| ClientError::Connect {
                    target: target.clone(),
                    source,
                })?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                ClientError::Tls {
                    target: target.clone(),
                    reason: e.to_string(),
                }
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| ClientError::Tls {
                    target,
                    reason: e.to_string(),
                })?;
            Ok((Box::new(stream), token.as_deref()))
        }
    }
}

/// One request on a fresh connection over any transport.
pub async fn call(
    transport: &Transport,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let exchange = async {
        let (io, token) = connect(transport).await?;
        let (response, driver) = send(io, method, path, headers, token, body).await?;
        let response = collect(response).await;
        driver.abort();
        response
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
    let head = async {
        let (io, token) = connect(transport).await?;
        send(io, Method::GET, path, &[], token, None).await
    };
    let (response, driver) = tokio::time::timeout(answer, head)
        .await
        .map_err(|_| ClientError::Timeout(answer))??;
    if response.status() != StatusCode::OK {
        let refused = tokio::time::timeout(answer, collect(response))
            .await
            .map_err(|_| ClientError::Timeout(answer))?;
        driver.abort();
        return refused.map(Download::Refused);
    }
    let mut body = response.into_body();
    let mut written = 0u64;
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| ClientError::Timeout(idle))?;
        let Some(frame) = frame else { break };
        if let Ok(data) = frame?.into_data() {
            sink.write_all(&data)
                .await
                .map_err(|source| ClientError::Write { source })?;
            written += data.len() as u64;
        }
    }
    sink.flush()
        .await
        .map_err(|source| ClientError::Write { source })?;
    driver.abort();
    Ok(Download::Written(written))
}

type Driver = tokio::task::JoinHandle<Result<(), hyper::Error>>;

async fn send(
    io: Box<dyn Io>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(hyper::Response<hyper::body::Incoming>, Driver), ClientError> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    Ok((response, driver))
}

async fn collect(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Response, ClientError> {
    let status = response.status();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Response {
        status,
        content_type,
        body,
    })
}
