//! `Debug` for generated messages that carry a secret: every other field as usual, the secret
//! as `[redacted]`, so a stray `{:?}` can never leak one.

use std::fmt;

use crate::admin::v1::{
    CreateAdminTokenResponse, CreateProviderKeyRequest, CreateVirtualKeyResponse,
    RotateProviderKeyRequest,
};
use crate::config::v1::ProviderKeyConfig;

const REDACTED: &str = "[redacted]";

impl fmt::Debug for CreateProviderKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateProviderKeyRequest")
            .field("organization", &self.organization)
            .field("provider", &self.provider)
            .field("name", &self.name)
            .field("secret", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for RotateProviderKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotateProviderKeyRequest")
            .field("organization", &self.organization)
            .field("provider", &self.provider)
            .field("name", &self.name)
            .field("new_name", &self.new_name)
            .field("new_secret", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for CreateVirtualKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateVirtualKeyResponse")
            .field("virtual_key", &self.virtual_key)
            .field("key", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for CreateAdminTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAdminTokenResponse")
            .field("admin_token", &self.admin_token)
            .field("token", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for ProviderKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderKeyConfig")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("sealed_secret", &REDACTED)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let request = CreateProviderKeyRequest {
            secret: "sk-canary-123".into(),
            ..Default::default()
        };
        let rotate = RotateProviderKeyRequest {
            new_secret: "sk-canary-123".into(),
            ..Default::default()
        };
        let vkey = CreateVirtualKeyResponse {
            key: "sk-canary-123".into(),
            virtual_key: None,
        };
        let token = CreateAdminTokenResponse {
            token: "sk-canary-123".into(),
            admin_token: None,
        };
        for shown in [
            format!("{request:?}"),
            format!("{rotate:?}"),
            format!("{vkey:?}"),
            format!("{token:?}"),
        ] {
            assert!(!shown.contains("canary"), "{shown}");
            assert!(shown.contains("[redacted]"));
        }
    }
}
