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
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
        }
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
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.code.error_type(),
                "param": self.param,
                "code": self.code.as_str(),
                "next_action": self.code.next_action().as_str(),
                "request_id": request_id,
            }
        });
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
