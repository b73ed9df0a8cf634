//! What an upstream's error answer says about the provider key, read the same way by the
//! control plane's key check and by proxies on live traffic.

use serde::Deserialize;

/// Whether an upstream answer refuses the key itself. Every family answers a bad key 401 or
/// 403, except Google, which answers `400 INVALID_ARGUMENT` with the reason
/// `API_KEY_INVALID` in its error details.
pub fn rejects_key(status: u16, body: &[u8]) -> bool {
    matches!(status, 401 | 403) || (status == 400 && google_key_invalid(body))
}

fn google_key_invalid(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Answer {
        error: Error,
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        reason: Option<String>,
    }
    serde_json::from_slice::<Answer>(body).is_ok_and(|answer| {
        answer
            .error
            .details
            .iter()
            .any(|detail| detail.reason.as_deref() == Some("API_KEY_INVALID"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_names_a_bad_key_in_its_details() {
        let bad_key = br#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}"#;
        assert!(rejects_key(400, bad_key));
        let bad_request = br#"{"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}}"#;
        assert!(!rejects_key(400, bad_request));
        assert!(!rejects_key(400, b"not json"));
        assert!(rejects_key(401, b""));
        assert!(rejects_key(403, b"{}"));
        assert!(!rejects_key(404, bad_key));
    }
}
