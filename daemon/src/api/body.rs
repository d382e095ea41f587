//! The JSON body of a request: 413 past the limit, 415 for another media type, 400 with the
//! position for malformed JSON.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};

use super::Problem;

pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let media_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        match media_type.as_deref() {
            Some("application/json" | "application/merge-patch+json") => {}
            other => {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    format!(
                        "the body must be JSON, sent with Content-Type: application/json (got {})",
                        other.unwrap_or("no Content-Type")
                    ),
                ));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body-too-large",
                        "Body too large",
                        format!("the body is larger than {} bytes", super::BODY_LIMIT),
                    )
                } else {
                    Problem::new(
                        rejection.status(),
                        "bad-body",
                        "Cannot read the body",
                        rejection.body_text(),
                    )
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON",
                    format!(
                        "malformed JSON at line {} column {}: {error}",
                        error.line(),
                        error.column()
                    ),
                )
            })
    }
}
