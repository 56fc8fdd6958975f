//! [`SecureClient`]: the core's [`SecureSession`] over this crate's [`Client`] (reqwest), with
//! the device's MLS state in files. Every method of the session is available through `Deref`.

use std::ops::{Deref, DerefMut};
use std::path::Path;

use hearth_client_core::{HearthError, SecureError, SecureSession};

use crate::{Client, ClientError};

/// How long calls wait out `rate_limited` answers before reporting them.
const RATE_LIMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// A client with end-to-end encryption.
#[derive(Debug)]
pub struct SecureClient(SecureSession<Client>);

impl SecureClient {
    /// Wraps a logged-in client; the device's MLS state lives in `state_dir` (one directory
    /// per device). Uploads key packages if the hearth holds too few.
    pub async fn open(client: Client, state_dir: &Path) -> Result<Self, SecureError> {
        let session = client
            .session()
            .ok_or(HearthError::from(ClientError::NotLoggedIn))?;
        let mls = crate::e2ee::open(state_dir, &session.user_id, &session.device_id)?;
        let mut client = client;
        client.set_rate_limit_patience(Some(RATE_LIMIT_PATIENCE));
        Ok(Self(SecureSession::new(client, mls).await?))
    }
}

impl Deref for SecureClient {
    type Target = SecureSession<Client>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for SecureClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
