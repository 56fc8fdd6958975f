//! Accounts and sessions: argon2id password hashes, devices, access and refresh tokens.
//!
//! Every method here is blocking (argon2, storage); async callers run them on the blocking pool.

pub mod password_pool;
pub mod seen;
pub mod store;
pub mod token;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hearth_crypto::{Secret, random_token};
use hearth_federation::KeyRing;
use hearth_spec::api::{DeviceInfo, Session};
use hearth_spec::{DeviceId, IdError, ServerName, UserId};
use rand::Rng;

use crate::accounts::password_pool::{PasswordPool, PoolConfig, PoolError};
use crate::config::{AuthConfig, Registration};
use crate::store::tables::{DeviceRecord, UserRecord};
use crate::store::{RotateOutcome, StoreError, TokenRegistration};
use store::AccountStore;
use token::{Claims, TokenError};

/// Longest password accepted, in bytes (argon2 input is bounded to keep hashing cost fixed).
pub const MAX_PASSWORD: usize = 1024;
/// Longest device name, in bytes.
pub const MAX_DEVICE_NAME: usize = 128;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid username: {0}")]
    InvalidUsername(IdError),
    #[error("{0} belongs to another hearth")]
    ForeignUser(UserId),
    #[error("that username is taken")]
    UserExists,
    #[error("the password must be at least {0} characters")]
    PasswordTooShort(usize),
    #[error("the password must be at most {MAX_PASSWORD} bytes")]
    PasswordTooLong,
    #[error("the device name must be at most {MAX_DEVICE_NAME} bytes")]
    DeviceNameTooLong,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("this account has been deactivated")]
    Deactivated,
    #[error("registration is closed on this hearth; ask its administrator for an account")]
    RegistrationClosed,
    #[error("this hearth registers only with a registration token from its administrator")]
    RegistrationTokenRequired,
    #[error("that registration token is unknown, used up or expired")]
    RegistrationTokenRefused,
    #[error("the refresh token is not valid; log in again")]
    BadRefreshToken,
    #[error("no such device")]
    DeviceNotFound,
    #[error("no such user")]
    UserNotFound,
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the session has been revoked; log in again")]
    Revoked,
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(#[source] PoolError),
    #[error("invalid argon2 parameters in the configuration: {0}")]
    Params(#[from] argon2::Error),
    #[error("the hearth is busy checking passwords; retry in {retry_after_ms} ms")]
    Busy { retry_after_ms: u64 },
}

impl From<PoolError> for AccountError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy { retry_after_ms } => AccountError::Busy { retry_after_ms },
            e @ (PoolError::Params(_) | PoolError::Hash(_)) => AccountError::Hash(e),
        }
    }
}

/// Accounts of this hearth.
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    /// Tokens are signed with the current key and accepted from retired ones in their grace
    /// period, so a key rotation logs nobody out.
    keys: Arc<KeyRing>,
    server_name: ServerName,
    config: AuthConfig,
    /// Devices that are logged in; tokens of any other device are refused at once.
    live: RwLock<HashSet<(UserId, DeviceId)>>,
    /// Verified against when the user does not exist, so timing does not reveal which usernames exist.
    dummy_hash: String,
    /// Where every password is hashed and checked, a bounded number at a time.
    passwords: PasswordPool,
}

fn now_ms() -> u64 {
    crate::clock::now_ms()
}

impl Accounts {
    /// Loads the live device set from the store.
    pub fn new(
        store: Arc<dyn AccountStore>,
        keys: Arc<KeyRing>,
        server_name: ServerName,
        config: AuthConfig,
    ) -> Result<Self, AccountError> {
        let live = store.all_devices()?.into_iter().collect();
        let mut pool =
            PoolConfig::for_this_machine(Duration::from_millis(config.password_queue_ms));
        if config.password_workers > 0 {
            pool.workers = config.password_workers;
            pool.queue = config.password_workers * 64;
        }
        let passwords = PasswordPool::start(pool);
        let dummy_hash = passwords.hash(argon2_params(&config)?, "not a password")?;
        Ok(Self {
            store,
            keys,
            server_name,
            config,
            live: RwLock::new(live),
            dummy_hash,
            passwords,
        })
    }

    /// Parses a username: a localpart, or a full user id on this hearth.
    pub fn user_id(&self, username: &str) -> Result<UserId, AccountError> {
        if username.starts_with('@') {
            let user = UserId::parse(username).map_err(AccountError::InvalidUsername)?;
            if user.server_name() != self.server_name {
                return Err(AccountError::ForeignUser(user));
            }
            return Ok(user);
        }
        UserId::validate_localpart(username).map_err(AccountError::InvalidUsername)?;
        UserId::new(username, &self.server_name).map_err(AccountError::InvalidUsername)
    }

    /// Creates a user (for `register` when open, and for admins always).
    pub fn create_user(&self, username: &str, password: &str) -> Result<UserId, AccountError> {
        let (user, record) = self.new_user(username, password)?;
        if !self.store.insert_user(&user, &record)? {
            return Err(AccountError::UserExists);
        }
        Ok(user)
    }

    /// A checked username and password as a new user's record (not yet stored).
    fn new_user(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(UserId, UserRecord), AccountError> {
        let user = self.user_id(username)?;
        let password_hash = self.password_hash(password)?;
        Ok((
            user,
            UserRecord {
                password_hash,
                created_ts: now_ms(),
                deactivated: false,
            },
        ))
    }

    fn password_hash(&self, password: &str) -> Result<String, AccountError> {
        if password.chars().count() < self.config.min_password_len {
            return Err(AccountError::PasswordTooShort(self.config.min_password_len));
        }
        if password.len() > MAX_PASSWORD {
            return Err(AccountError::PasswordTooLong);
        }
        Ok(self
            .passwords
            .hash(argon2_params(&self.config)?, password)?)
    }

    /// Registers over the client API and logs in the first device: anyone while registration
    /// is open, with a registration token (spent in the same transaction) while it is by token.
    pub fn register(
        &self,
        username: &str,
        password: &str,
        device_name: Option<String>,
        token: Option<&str>,
    ) -> Result<Session, AccountError> {
        check_device_name(&device_name)?;
        let user = match self.config.registration {
            Registration::Closed => return Err(AccountError::RegistrationClosed),
            Registration::Open => self.create_user(username, password)?,
            Registration::Token => {
                let token = token.ok_or(AccountError::RegistrationTokenRequired)?;
                let (user, record) = self.new_user(username, password)?;
                match self
                    .store
                    .insert_user_with_token(&user, &record, token, now_ms())?
                {
                    TokenRegistration::Registered => user,
                    TokenRegistration::UserExists => return Err(AccountError::UserExists),
                    TokenRegistration::TokenRefused => {
                        return Err(AccountError::RegistrationTokenRefused);
                    }
                }
            }
        };
        self.new_device(user, device_name)
    }

    /// Checks the password and logs in a new device.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        device_name: Option<String>,
    ) -> Result<Session, AccountError> {
        check_device_name(&device_name)?;
        if password.len() > MAX_PASSWORD {
            return Err(AccountError::BadCredentials);
        }
        let user = self
            .user_id(username)
            .map_err(|_| AccountError::BadCredentials)?;
        let record = self.store.user(&user)?;
        let hash = record
            .as_ref()
            .map(|r| r.password_hash.as_str())
            .unwrap_or(&self.dummy_hash);
        let ok = self.passwords.verify(hash, password)?;
        match record {
            Some(r) if ok && r.deactivated => Err(AccountError::Deactivated),
            Some(_) if ok => self.new_device(user, device_name),
            _ => Err(AccountError::BadCredentials),
        }
    }

    fn new_device(&self, user: UserId, name: Option<String>) -> Result<Session, AccountError> {
        let device = random_device_id();
        let refresh = refresh_token(&user, &device);
        let record = DeviceRecord {
            name: name.unwrap_or_else(|| "unnamed device".into()),
            created_ts: now_ms(),
            refresh_hash: refresh.hash(),
        };
        self.store.put_device(&user, &device, &record)?;
        self.live
            .write()
            .expect("live lock")
            .insert((user.clone(), device.clone()));
        Ok(self.session(user, device, refresh))
    }

    fn session(&self, user: UserId, device: DeviceId, refresh: Secret) -> Session {
        let ttl_ms = self.config.access_token_ttl_ms;
        let claims = Claims {
            user: user.clone(),
            device: device.clone(),
            expires_ms: now_ms() + ttl_ms,
        };
        Session {
            access_token: token::issue(&self.keys.current(), &claims),
            user_id: user,
            device_id: device,
            // The wire counts whole seconds (spec/client-protocol.md).
            expires_in: ttl_ms / 1000,
            refresh_token: refresh.expose().to_owned(),
        }
    }

    /// Trades a refresh token for a new session. A spent token used again revokes the device:
    /// it means the token was copied.
    pub fn refresh(&self, presented: &str) -> Result<Session, AccountError> {
        let presented = Secret::new(presented.to_owned());
        let (user, device) =
            parse_refresh(presented.expose()).ok_or(AccountError::BadRefreshToken)?;
        if self.store.user(&user)?.is_none_or(|r| r.deactivated) {
            return Err(AccountError::BadRefreshToken);
        }
        let next = refresh_token(&user, &device);
        match self
            .store
            .rotate_refresh(&user, &device, presented.hash(), next.hash())?
        {
            RotateOutcome::Rotated => Ok(self.session(user, device, next)),
            RotateOutcome::Mismatch => {
                tracing::warn!(%user, %device, "spent refresh token presented; revoking the device");
                self.remove_devices(&user, std::slice::from_ref(&device))?;
                Err(AccountError::BadRefreshToken)
            }
            RotateOutcome::NoDevice => Err(AccountError::BadRefreshToken),
        }
    }

    /// Verifies an access token and that its device is still logged in.
    pub fn authenticate(&self, access_token: &str) -> Result<(UserId, DeviceId), AccountError> {
        let now = now_ms();
        let mut claims = Err(token::TokenError::BadSignature);
        for key in self.keys.valid(now) {
            claims = token::verify(&key.verifying_key(), access_token, now);
            if claims != Err(token::TokenError::BadSignature) {
                break;
            }
        }
        let claims = claims?;
        let key = (claims.user, claims.device);
        if !self.live.read().expect("live lock").contains(&key) {
            return Err(AccountError::Revoked);
        }
        Ok(key)
    }

    /// Whether a device is logged in.
    pub fn is_live(&self, user: &UserId, device: &DeviceId) -> bool {
        self.live
            .read()
            .expect("live lock")
            .contains(&(user.clone(), device.clone()))
    }

    /// Logs devices out.
    pub fn remove_devices(
        &self,
        user: &UserId,
        devices: &[DeviceId],
    ) -> Result<usize, AccountError> {
        {
            let mut live = self.live.write().expect("live lock");
            for device in devices {
                live.remove(&(user.clone(), device.clone()));
            }
        }
        Ok(self.store.delete_devices(user, devices)?)
    }

    /// Removes one device of a user; not found if it does not exist.
    pub fn delete_device(&self, user: &UserId, device: &DeviceId) -> Result<(), AccountError> {
        match self.remove_devices(user, std::slice::from_ref(device))? {
            0 => Err(AccountError::DeviceNotFound),
            _ => Ok(()),
        }
    }

    /// A user's devices.
    pub fn devices(
        &self,
        user: &UserId,
        current: &DeviceId,
    ) -> Result<Vec<DeviceInfo>, AccountError> {
        Ok(self
            .store
            .devices(user)?
            .into_iter()
            .map(|(id, record)| DeviceInfo {
                current: &id == current,
                device_id: id,
                name: record.name,
                created_ts: record.created_ts,
            })
            .collect())
    }

    /// Whether a user exists and is active (for invites).
    pub fn is_active_user(&self, user: &UserId) -> Result<bool, AccountError> {
        Ok(self.store.user(user)?.is_some_and(|r| !r.deactivated))
    }

    /// Every user, for admins.
    pub fn list_users(&self) -> Result<Vec<(UserId, UserRecord)>, AccountError> {
        Ok(self.store.users()?)
    }

    /// Deactivates a user: no more logins, every device logged out.
    pub fn deactivate(&self, user: &UserId) -> Result<(), AccountError> {
        let mut record = self.store.user(user)?.ok_or(AccountError::UserNotFound)?;
        record.deactivated = true;
        self.store.put_user(user, &record)?;
        self.logout_everywhere(user)?;
        Ok(())
    }

    /// Lets a deactivated user log in again (their devices stay logged out).
    pub fn reactivate(&self, user: &UserId) -> Result<(), AccountError> {
        let mut record = self.store.user(user)?.ok_or(AccountError::UserNotFound)?;
        record.deactivated = false;
        self.store.put_user(user, &record)?;
        Ok(())
    }

    /// Sets a new password; with `logout`, logs every device out. How many were.
    pub fn reset_password(
        &self,
        user: &UserId,
        password: &str,
        logout: bool,
    ) -> Result<usize, AccountError> {
        let mut record = self.store.user(user)?.ok_or(AccountError::UserNotFound)?;
        record.password_hash = self.password_hash(password)?;
        self.store.put_user(user, &record)?;
        if logout {
            self.logout_everywhere(user)
        } else {
            Ok(0)
        }
    }

    /// Logs every device of a user out; how many there were.
    pub fn logout_everywhere(&self, user: &UserId) -> Result<usize, AccountError> {
        let devices: Vec<DeviceId> = self
            .store
            .devices(user)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        self.remove_devices(user, &devices)
    }

    /// The hearth these accounts belong to.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// A user's record, or not found.
    pub fn user(&self, user: &UserId) -> Result<UserRecord, AccountError> {
        self.store.user(user)?.ok_or(AccountError::UserNotFound)
    }

    /// A user's devices, as stored.
    pub fn device_records(
        &self,
        user: &UserId,
    ) -> Result<Vec<(DeviceId, DeviceRecord)>, AccountError> {
        Ok(self.store.devices(user)?)
    }

    /// Grants or revokes the admin flag of an existing user.
    pub fn set_admin(&self, user: &UserId, admin: bool) -> Result<(), AccountError> {
        self.user(user)?;
        Ok(self.store.set_admin(user, admin)?)
    }

    /// Whether an active user has the admin flag.
    pub fn is_admin(&self, user: &UserId) -> Result<bool, AccountError> {
        Ok(self.store.is_admin(user)? && self.is_active_user(user)?)
    }

    /// Every user with the admin flag.
    pub fn admins(&self) -> Result<HashSet<UserId>, AccountError> {
        Ok(self.store.admins()?)
    }
}

fn check_device_name(name: &Option<String>) -> Result<(), AccountError> {
    match name {
        Some(n) if n.len() > MAX_DEVICE_NAME => Err(AccountError::DeviceNameTooLong),
        _ => Ok(()),
    }
}

/// The configured cost for new hashes (old hashes are checked with the cost stored in them, so
/// changing it keeps them working).
fn argon2_params(config: &AuthConfig) -> Result<argon2::Params, AccountError> {
    Ok(argon2::Params::new(
        config.argon2_m_cost_kib,
        config.argon2_t_cost,
        1,
        None,
    )?)
}

fn random_device_id() -> DeviceId {
    let mut rng = rand::thread_rng();
    let id: String = (0..10)
        .map(|_| rng.gen_range(b'A'..=b'Z') as char)
        .collect();
    DeviceId::parse(&id).expect("valid device id")
}

/// `<base64url(user id)>.<device id>.<256-bit secret>`.
fn refresh_token(user: &UserId, device: &DeviceId) -> Secret {
    let secret = random_token();
    Secret::new(format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(user.as_str()),
        device,
        secret.expose()
    ))
}

fn parse_refresh(token: &str) -> Option<(UserId, DeviceId)> {
    if token.len() > 512 {
        return None;
    }
    let mut parts = token.splitn(3, '.');
    let user = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let user = UserId::parse(std::str::from_utf8(&user).ok()?).ok()?;
    let device = DeviceId::parse(parts.next()?).ok()?;
    parts.next()?;
    Some((user, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn accounts() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let accounts = Accounts::new(
            store,
            Arc::new(KeyRing::single(Arc::new(
                hearth_crypto::ServerKey::generate(),
            ))),
            ServerName::parse("localhost").unwrap(),
            AuthConfig::default(),
        )
        .unwrap();
        (dir, accounts)
    }

    #[test]
    fn register_login_and_wrong_password() {
        let (_d, a) = accounts();
        let s = a.register("alice", "correct horse", None, None).unwrap();
        assert_eq!(s.user_id.as_str(), "@alice:localhost");
        assert!(a.authenticate(&s.access_token).is_ok());
        assert!(matches!(
            a.register("alice", "another pass", None, None),
            Err(AccountError::UserExists)
        ));
        assert!(matches!(
            a.login("alice", "wrong horse", None),
            Err(AccountError::BadCredentials)
        ));
        assert!(matches!(
            a.login("nobody", "wrong horse", None),
            Err(AccountError::BadCredentials)
        ));
        let s2 = a.login("@alice:localhost", "correct horse", None).unwrap();
        assert_ne!(s.device_id, s2.device_id);
    }

    #[test]
    fn refresh_token_is_single_use_and_reuse_revokes() {
        let (_d, a) = accounts();
        let s = a.register("bob", "password1", None, None).unwrap();
        let s2 = a.refresh(&s.refresh_token).unwrap();
        assert_eq!(s2.device_id, s.device_id);
        // The spent token again: refused, and the device is logged out.
        assert!(matches!(
            a.refresh(&s.refresh_token),
            Err(AccountError::BadRefreshToken)
        ));
        assert!(matches!(
            a.authenticate(&s2.access_token),
            Err(AccountError::Revoked)
        ));
        assert!(matches!(
            a.refresh(&s2.refresh_token),
            Err(AccountError::BadRefreshToken)
        ));
        assert!(matches!(
            a.refresh("garbage"),
            Err(AccountError::BadRefreshToken)
        ));
    }

    #[test]
    fn logout_and_deactivation_revoke_tokens() {
        let (_d, a) = accounts();
        let s = a.register("carol", "password1", None, None).unwrap();
        let s2 = a.login("carol", "password1", None).unwrap();
        a.delete_device(&s.user_id, &s.device_id).unwrap();
        assert!(matches!(
            a.authenticate(&s.access_token),
            Err(AccountError::Revoked)
        ));
        assert!(a.authenticate(&s2.access_token).is_ok());
        a.deactivate(&s.user_id).unwrap();
        assert!(matches!(
            a.authenticate(&s2.access_token),
            Err(AccountError::Revoked)
        ));
        assert!(matches!(
            a.login("carol", "password1", None),
            Err(AccountError::Deactivated)
        ));
    }

    #[test]
    fn short_passwords_and_bad_usernames_are_refused() {
        let (_d, a) = accounts();
        assert!(matches!(
            a.register("dave", "short", None, None),
            Err(AccountError::PasswordTooShort(8))
        ));
        assert!(matches!(
            a.register("Dave!", "password1", None, None),
            Err(AccountError::InvalidUsername(_))
        ));
        assert!(matches!(
            a.register("@dave:elsewhere", "password1", None, None),
            Err(AccountError::ForeignUser(_))
        ));
    }
}
