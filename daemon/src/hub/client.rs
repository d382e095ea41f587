//! A client for JupyterHub's REST API (`/hub/api`), as the `pangeo-appliance` service.
//!
//! Facts of JupyterHub 5.5 this relies on: a bad token gets 403 (not 401); `POST /users` skips
//! names that exist and answers 409 only when all do; `POST /users/{name}/server` answers 201
//! when the server is ready and 202 while it spawns; `DELETE` of it 204, or 202 while it stops;
//! errors carry `{"status", "message"}`.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Each request's own bound; a hub that does not answer in this time counts as down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Each request made for an admin API request: well inside the API's 15 s deadline, so the
/// answer names the hub rather than the deadline naming it.
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Page size of user listings (the hub's maximum is 200 by default).
const PAGE: usize = 200;
/// Names per bulk create request.
const CREATE_BATCH: usize = 500;

#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error(
        "the hub at {url} is unreachable ({reason}); check that the jupyterhub component is running (pangeoctl status) and hub.api_url"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "the hub refused pangeod's token for {what} (HTTP {status}); the pangeo-appliance service token (hub.api_token_file, or pangeod's generated one in the chart) must be the hub's, with the admin role"
    )]
    Unauthorized { what: String, status: u16 },
    #[error("{what}: the hub has no such user or server")]
    NotFound { what: String },
    #[error("{what} did not finish within {after:?}; the hub may be overloaded; it is retried")]
    Timeout { what: String, after: Duration },
    #[error("{what} failed: HTTP {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: the hub's answer is not what JupyterHub 5 sends: {reason}")]
    Decode { what: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error(
        "the hub is not installed yet ({0}); pangeod reaches it once the components step has installed JupyterHub"
    )]
    NotInstalled(String),
}

impl HubError {
    /// Worth retrying: the hub is down, restarting or overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            HubError::Unreachable { .. } | HubError::Timeout { .. } => true,
            HubError::Status {
                status, message, ..
            } => {
                *status >= 500
                    || *status == 429
                    // A user whose server is still stopping cannot be deleted yet.
                    || message.contains("in the process of stopping")
            }
            _ => false,
        }
    }
}

/// A hub user, as the hub reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubUser {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    /// The default server's URL path while it runs.
    #[serde(default)]
    pub server: Option<String>,
    /// `spawn` or `stop` while the default server is changing.
    #[serde(default)]
    pub pending: Option<String>,
    #[serde(default)]
    pub last_activity: Option<String>,
}

impl HubUser {
    /// The default server's state: `running`, `starting`, `stopping` or `stopped`.
    pub fn server_state(&self) -> &'static str {
        match (self.pending.as_deref(), &self.server) {
            (Some("spawn"), _) => "starting",
            (Some("stop"), _) => "stopping",
            (_, Some(_)) => "running",
            _ => "stopped",
        }
    }
}

/// A user's API token, as listed by the hub (never the secret itself).
#[derive(Debug, Clone, Deserialize)]
pub struct HubToken {
    pub id: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// What a server request ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerOutcome {
    /// Started, or stopped, as asked.
    Done,
    /// It already was.
    Already,
    /// Still starting or stopping when the wait ended; the hub goes on with it.
    Pending,
}

#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    /// `.../hub/api`, no trailing slash.
    api: String,
    token: String,
    /// Requests sent, by this client and its clones.
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Each request's limit where none is given (bulk creation of 500 users takes seconds).
    timeout: Duration,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient").field("api", &self.api).finish()
    }
}

impl HubClient {
    /// A client for the hub API at `api_url` (`http(s)://host:port/<base>/hub/api`). An https
    /// URL is verified against `ca_pem`.
    pub fn new(api_url: &str, token: String, ca_pem: Option<&[u8]>) -> Result<Self, HubError> {
        let api = api_url.trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(16)
            .user_agent(concat!("pangeod/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certificate = reqwest::Certificate::from_pem(pem).map_err(|e| {
                HubError::Config(format!(
                    "hub.ca_file is not a PEM certificate ({e}); give the CA that signed the hub's certificate"
                ))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder
            .build()
            .map_err(|e| HubError::Config(format!("cannot make the hub client: {e}")))?;
        Ok(Self {
            http,
            api,
            token,
            requests: Default::default(),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// This client with the shorter limit for calls made while an admin API request waits.
    pub fn for_api(mut self) -> Self {
        self.timeout = API_REQUEST_TIMEOUT;
        self
    }

    pub fn api_url(&self) -> &str {
        &self.api
    }

    /// Requests sent so far by this client and its clones.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<(StatusCode, Value), HubError> {
        self.call_within(method, path, body, what, self.timeout)
            .await
    }

    async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, Value), HubError> {
        let url = format!("{}{path}", self.api);
        let mut request = self
            .http
            .request(method, &url)
            .timeout(timeout)
            .header("Accept", "application/jupyterhub-pagination+json");
        // JupyterHub's API root is public. The probe that checks who answers on the hub's
        // address (`version`) therefore carries no token, so a stranger that answers there (a
        // Service address used before kube-proxy translated it) never sees it.
        if path != "/" {
            request = request.header("Authorization", format!("token {}", self.token));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        crate::waits::note(|| format!("the hub at {}: {what}", self.api));
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(e, what, timeout))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(e, what, timeout))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            return Ok((status, value));
        }
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                value
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect()
            });
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HubError::Unauthorized {
                what: what.to_string(),
                status: status.as_u16(),
            },
            StatusCode::NOT_FOUND => HubError::NotFound {
                what: what.to_string(),
            },
            // From the proxy in front of the hub: the hub itself is down or restarting.
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => HubError::Unreachable {
                url: self.api.clone(),
                reason: format!("{what}: HTTP {status}"),
            },
            _ => HubError::Status {
                what: what.to_string(),
                status: status.as_u16(),
                message,
            },
        })
    }

    fn transport(&self, error: reqwest::Error, what: &str, timeout: Duration) -> HubError {
        if error.is_timeout() {
            HubError::Timeout {
                what: what.to_string(),
                after: timeout,
            }
        } else {
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                reason = format!("{reason}: {inner}");
                source = inner.source();
            }
            HubError::Unreachable {
                url: self.api.clone(),
                reason,
            }
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, HubError> {
        serde_json::from_value(value).map_err(|e| HubError::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// The hub's version (`GET /hub/api/`).
    ///
    /// JupyterHub answers its API root to anyone, so any other answer means that whatever
    /// answered is not (yet) the hub: a Service address used before kube-proxy translated it,
    /// or a wrong `hub.api_url`. That is reported as unreachable, so the caller drops this
    /// client and its pooled connections and the next run connects afresh.
    pub async fn version(&self) -> Result<String, HubError> {
        let not_the_hub = |reason: String| HubError::Unreachable {
            url: self.api.clone(),
            reason: format!(
                "GET {}/ {reason}, which JupyterHub always serves: not the hub",
                self.api
            ),
        };
        let value = match self.call(Method::GET, "/", None, "hub version").await {
            Ok((_, value)) => value,
            Err(HubError::NotFound { .. }) => return Err(not_the_hub("answered 404".into())),
            Err(HubError::Status { status, .. }) if status < 500 => {
                return Err(not_the_hub(format!("answered HTTP {status}")));
            }
            Err(other) => return Err(other),
        };
        value
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| not_the_hub("has no \"version\"".into()))
    }

    /// Every hub user, page by page.
    pub async fn users(&self) -> Result<Vec<HubUser>, HubError> {
        let mut users = Vec::new();
        let mut offset = 0usize;
        loop {
            let what = "list hub users";
            let (_, value) = self
                .call(
                    Method::GET,
                    &format!("/users?offset={offset}&limit={PAGE}"),
                    None,
                    what,
                )
                .await?;
            #[derive(Deserialize)]
            struct Page {
                items: Vec<HubUser>,
                #[serde(rename = "_pagination")]
                pagination: Pagination,
            }
            #[derive(Deserialize)]
            struct Pagination {
                next: Option<Next>,
            }
            #[derive(Deserialize)]
            struct Next {
                offset: usize,
            }
            let page: Page = Self::decode(value, what)?;
            let got = page.items.len();
            users.extend(page.items);
            match page.pagination.next {
                Some(next) if got > 0 && next.offset > offset => offset = next.offset,
                _ => return Ok(users),
            }
        }
    }

    /// One user, or None when the hub has no such user.
    pub async fn user(&self, name: &str) -> Result<Option<HubUser>, HubError> {
        let what = format!("get hub user {name}");
        match self
            .call(Method::GET, &format!("/users/{}", enc(name)), None, &what)
            .await
        {
            Ok((_, value)) => Self::decode(value, &what).map(Some),
            Err(HubError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates users in bulk (`POST /users`), with the given admin flag. Names that exist are
    /// skipped by the hub. Returns the names the hub refused, with its reason: a batch the hub
    /// refuses is tried again name by name.
    pub async fn create_users(
        &self,
        names: &[String],
        admin: bool,
    ) -> Result<Vec<(String, String)>, HubError> {
        let mut refused = Vec::new();
        for chunk in names.chunks(CREATE_BATCH) {
            let what = format!("create {} hub users", chunk.len());
            match self
                .call(
                    Method::POST,
                    "/users",
                    Some(json!({ "usernames": chunk, "admin": admin })),
                    &what,
                )
                .await
            {
                Ok(_) => {}
                // All of them exist already: what was wanted.
                Err(HubError::Status { status: 409, .. }) => {}
                // The hub refuses the whole request for one name it cannot hold: one by one,
                // so that the others are not held back.
                Err(HubError::Status { status: 400, .. }) if chunk.len() > 1 => {
                    for name in chunk {
                        if let Some(reason) = self.create_user(name, admin).await? {
                            refused.push((name.clone(), reason));
                        }
                    }
                }
                Err(HubError::Status {
                    status: 400,
                    message,
                    ..
                }) => refused.extend(chunk.iter().map(|n| (n.clone(), message.clone()))),
                Err(error) => return Err(error),
            }
        }
        Ok(refused)
    }

    /// Creates one hub user; the hub's reason if it refuses the name.
    async fn create_user(&self, name: &str, admin: bool) -> Result<Option<String>, HubError> {
        let what = format!("create hub user {name}");
        match self
            .call(
                Method::POST,
                &format!("/users/{}", enc(name)),
                Some(json!({ "admin": admin })),
                &what,
            )
            .await
        {
            Ok(_) | Err(HubError::Status { status: 409, .. }) => Ok(None),
            Err(HubError::Status {
                status: 400,
                message,
                ..
            }) => Ok(Some(message)),
            Err(error) => Err(error),
        }
    }

    /// Sets a user's admin flag.
    pub async fn set_admin(&self, name: &str, admin: bool) -> Result<(), HubError> {
        let what = format!("set admin={admin} on hub user {name}");
        self.call(
            Method::PATCH,
            &format!("/users/{}", enc(name)),
            Some(json!({ "admin": admin })),
            &what,
        )
        .await
        .map(drop)
    }

    /// Deletes a hub user (their login cookie stops working). True if they existed. The home
    /// volume is not touched: KubeSpawner's `delete_pvc` is off.
    pub async fn delete_user(&self, name: &str) -> Result<bool, HubError> {
        let what = format!("delete hub user {name}");
        match self
            .call(
                Method::DELETE,
                &format!("/users/{}", enc(name)),
                None,
                &what,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(HubError::NotFound { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The user's API tokens.
    pub async fn tokens(&self, name: &str) -> Result<Vec<HubToken>, HubError> {
        let what = format!("list the tokens of hub user {name}");
        let (_, value) = self
            .call(
                Method::GET,
                &format!("/users/{}/tokens", enc(name)),
                None,
                &what,
            )
            .await?;
        #[derive(Deserialize)]
        struct Tokens {
            api_tokens: Vec<HubToken>,
        }
        Ok(Self::decode::<Tokens>(value, &what)?.api_tokens)
    }

    /// Starts the user's default server and waits, up to `wait`, until it is ready.
    pub async fn start_server(
        &self,
        name: &str,
        wait: Duration,
    ) -> Result<ServerOutcome, HubError> {
        let what = format!("start the server of {name}");
        let started = Instant::now();
        // The hub holds the POST until the server is up or its slow_spawn_timeout (10 s) has
        // passed; a client that stops waiting earlier does not stop the spawn.
        match self
            .call_within(
                Method::POST,
                &format!("/users/{}/server", enc(name)),
                None,
                &what,
                wait.max(Duration::from_secs(1)),
            )
            .await
        {
            Ok((StatusCode::CREATED, _)) => return Ok(ServerOutcome::Done),
            Ok(_) => {} // 202: spawning
            Err(HubError::Timeout { .. }) => return Ok(ServerOutcome::Pending),
            Err(HubError::Status {
                status: 400,
                message,
                ..
            }) if message.contains("already running") => return Ok(ServerOutcome::Already),
            Err(HubError::Status {
                status: 400,
                message,
                ..
            }) if message.contains("pending spawn") => {}
            Err(error) => return Err(error),
        }
        self.wait_for(name, &what, started, wait, |user| {
            user.pending.is_none() && user.server.is_some()
        })
        .await
    }

    /// Stops the user's default server and waits, up to `wait`, until it has stopped. The hub
    /// answers 204 also when nothing ran, so the user's state is read first: `Already` means
    /// no server was running or changing.
    pub async fn stop_server(&self, name: &str, wait: Duration) -> Result<ServerOutcome, HubError> {
        let what = format!("stop the server of {name}");
        let started = Instant::now();
        match self.user(name).await? {
            None => return Err(HubError::NotFound { what }),
            Some(user) if user.server.is_none() && user.pending.is_none() => {
                return Ok(ServerOutcome::Already);
            }
            Some(_) => {}
        }
        match self
            .call_within(
                Method::DELETE,
                &format!("/users/{}/server", enc(name)),
                None,
                &what,
                wait.max(Duration::from_secs(1)),
            )
            .await
        {
            Ok((StatusCode::NO_CONTENT, _)) => return Ok(ServerOutcome::Done),
            Ok(_) => {} // 202: stopping
            Err(HubError::Timeout { .. }) => return Ok(ServerOutcome::Pending),
            Err(error) => return Err(error),
        }
        self.wait_for(name, &what, started, wait, |user| {
            user.pending.is_none() && user.server.is_none()
        })
        .await
    }

    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        started: Instant,
        wait: Duration,
        done: impl Fn(&HubUser) -> bool,
    ) -> Result<ServerOutcome, HubError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let Some(user) = self.user(name).await? else {
                return Err(HubError::NotFound {
                    what: what.to_string(),
                });
            };
            if done(&user) {
                return Ok(ServerOutcome::Done);
            }
            if started.elapsed() >= wait {
                return Ok(ServerOutcome::Pending);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// Percent-encodes a path segment (user names are plain, but a token id or a stray character
/// must not change the path).
fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("alice.b-c_d"), "alice.b-c_d");
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn server_state_follows_pending_then_url() {
        let mut user = HubUser {
            name: "a".into(),
            admin: false,
            server: None,
            pending: None,
            last_activity: None,
        };
        assert_eq!(user.server_state(), "stopped");
        user.pending = Some("spawn".into());
        assert_eq!(user.server_state(), "starting");
        user.pending = None;
        user.server = Some("/user/a/".into());
        assert_eq!(user.server_state(), "running");
        user.pending = Some("stop".into());
        assert_eq!(user.server_state(), "stopping");
    }

    /// Serves `answer` to every request on every connection, keeping connections open (as the
    /// stranger behind a default route did), and counts the connections.
    async fn serve_forever(
        answer: &'static str,
    ) -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counted, kept) = (connections.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        kept.lock().expect("lock").extend_from_slice(&buf[..n]);
                        if n == 0 || socket.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/hub/api"), connections, received)
    }

    #[tokio::test]
    async fn an_api_root_that_is_not_jupyterhubs_is_unreachable_so_the_client_is_dropped() {
        for answer in [
            "HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found",
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        ] {
            let (url, _, received) = serve_forever(answer).await;
            let client = HubClient::new(&url, "secret-token".into(), None).expect("client");
            match client.version().await {
                Err(HubError::Unreachable { reason, .. }) => {
                    assert!(reason.contains("not the hub"), "{answer}: {reason}")
                }
                other => panic!("{answer}: expected unreachable, got {other:?}"),
            }
            let sent = String::from_utf8_lossy(&received.lock().expect("lock")).to_lowercase();
            assert!(sent.starts_with("get /hub/api/ "), "{sent}");
            assert!(
                !sent.contains("authorization") && !sent.contains("secret-token"),
                "the probe carried the token: {sent}"
            );
        }
        let (url, connections, _) = serve_forever(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n{\"version\":\"5.3.0\"}",
        )
        .await;
        let client = HubClient::new(&url, "t".into(), None).expect("client");
        for _ in 0..3 {
            assert_eq!(client.version().await.expect("version"), "5.3.0");
        }
        // One pooled connection: which is why a bad one must be dropped with its client.
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn transient_errors_are_down_timeouts_and_5xx() {
        let down = HubError::Unreachable {
            url: "u".into(),
            reason: "r".into(),
        };
        assert!(down.is_transient());
        let bad = HubError::Status {
            what: "w".into(),
            status: 400,
            message: "m".into(),
        };
        assert!(!bad.is_transient());
        let busy = HubError::Status {
            what: "w".into(),
            status: 503,
            message: "m".into(),
        };
        assert!(busy.is_transient());
        assert!(
            !HubError::Unauthorized {
                what: "w".into(),
                status: 403
            }
            .is_transient()
        );
    }
}
