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
        match transport {
            Transport::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|source| ClientError::Connect {
                        target: socket.display().to_string(),
                        source,
                    })?;
                send(stream, method, path, headers, None, body).await
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
                send(stream, method, path, headers, token.as_deref(), body).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn send<I>(
    io: I,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<Response, ClientError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
    let status = response.status();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(Response {
        status,
        content_type,
        body,
    })
}
