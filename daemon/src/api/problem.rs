//! Errors as `application/problem+json` (RFC 9457), each with a stable `type` a program can
//! match on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable identifier, `urn:pangeod:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:pangeod:problem:{code}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: escape_controls(&detail.into()),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(escape_controls(&field.into()));
        self
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }
}

/// Control characters in a message, escaped (`\u{1b}`): a key or value echoed back from a
/// request must not repaint the terminal of whoever reads the message. Newlines and tabs stay
/// (several errors are listed one a line).
pub fn escape_controls(text: &str) -> String {
    let escaped = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(escaped) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if escaped(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Every error leaves as problem+json, including those made by layers and extractors
/// (405, 408, 413, query rejections): their plain text becomes the `detail`.
pub async fn problemize(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (code, title) = match status {
        StatusCode::BAD_REQUEST => ("bad-request", "Bad request"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "Request timed out"),
        StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "Body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid", "Invalid request"),
        _ if status.is_server_error() => ("internal", "Internal error"),
        _ => ("client-error", "Client error"),
    };
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let detail = if text.is_empty() {
        title.to_string()
    } else {
        text
    };
    Problem::new(status, code, title, detail).into_response()
}

impl From<crate::state::StateError> for Problem {
    fn from(error: crate::state::StateError) -> Self {
        if let crate::state::StateError::DiskFull { .. } = error {
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk-full",
                "The state database's disk is full",
                error.to_string(),
            );
        }
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "state-unavailable",
            "State database unavailable",
            error.to_string(),
        )
    }
}
