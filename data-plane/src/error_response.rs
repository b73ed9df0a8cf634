//! Every error a client sees: OpenAI's error shape plus what to do next and the request id to
//! quote. Logged here, once, at a level that fits who must act.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use sluice_shared::error_code::{ErrorCode, NextAction};

use crate::http_body::{Body, full};

/// An error on its way to the client.
#[derive(Debug)]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: String,
    /// The offending request field, when there is one.
    pub param: Option<&'static str>,
    pub shape: ErrorShape,
}

/// Whose error body the client expects: the endpoint's family decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code", ...}}`
    #[default]
    OpenAi,
    /// `{"type": "error", "error": {"type", "message", ...}}`
    Anthropic,
    /// `{"error": {"code": <status>, "message", "status": "INVALID_ARGUMENT", ...}}`
    Gemini,
}

/// Google's canonical status name for an HTTP status.
fn google_status(status: u16) -> &'static str {
    match status {
        400 | 409 | 413 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Anthropic's error `type` for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 409 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 | 431 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            shape: ErrorShape::OpenAi,
        }
    }

    pub fn in_shape(mut self, shape: ErrorShape) -> Self {
        self.shape = shape;
        self
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        match self.code.next_action() {
            NextAction::Support => {
                tracing::error!(request_id, code = self.code.as_str(), message = %self.message, "request failed")
            }
            NextAction::Retry => {
                tracing::warn!(request_id, code = self.code.as_str(), message = %self.message, "request failed upstream")
            }
            NextAction::Fix | NextAction::Continue => {
                tracing::debug!(request_id, code = self.code.as_str(), message = %self.message, "request refused")
            }
        }
        let body = match self.shape {
            ErrorShape::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.code.error_type(),
                    "param": self.param,
                    "code": self.code.as_str(),
                    "next_action": self.code.next_action().as_str(),
                    "request_id": request_id,
                }
            }),
            ErrorShape::Gemini => json!({
                "error": {
                    "code": self.code.http_status(),
                    "message": self.message,
                    "status": google_status(self.code.http_status()),
                    "sluice_code": self.code.as_str(),
                    "next_action": self.code.next_action().as_str(),
                    "request_id": request_id,
                }
            }),
            ErrorShape::Anthropic => json!({
                "type": "error",
                "error": {
                    "type": anthropic_type(self.code.http_status()),
                    "message": self.message,
                    "code": self.code.as_str(),
                    "next_action": self.code.next_action().as_str(),
                },
                "request_id": request_id,
            }),
        };
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
