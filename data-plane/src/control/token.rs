//! The data-plane token on every call to the control plane (config, usage, leases), marked
//! sensitive so HTTP/2 never indexes it.

use sluice_shared::secret::SecretString;
use tonic::metadata::MetadataValue;

#[derive(Debug, thiserror::Error)]
#[error("the data-plane token cannot travel in a header")]
pub struct UnsendableToken;

impl From<UnsendableToken> for tonic::Status {
    fn from(error: UnsendableToken) -> Self {
        tonic::Status::unauthenticated(error.to_string())
    }
}

pub fn authorize<T>(
    request: &mut tonic::Request<T>,
    token: &SecretString,
) -> Result<(), UnsendableToken> {
    let mut header: MetadataValue<_> = format!("Bearer {}", token.expose())
        .parse()
        .map_err(|_| UnsendableToken)?;
    header.set_sensitive(true);
    request.metadata_mut().insert("authorization", header);
    Ok(())
}
