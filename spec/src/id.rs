//! Validated identifiers. Each is parsed once at the edge; `Display` is the wire form.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} must start with '{sigil}'")]
    MissingSigil { kind: &'static str, sigil: char },
    #[error("{kind} must have the form {form}")]
    Malformed {
        kind: &'static str,
        form: &'static str,
    },
    #[error("{kind} contains the character {found:?}, which is not allowed")]
    BadChar { kind: &'static str, found: char },
}

fn check_chars(
    kind: &'static str,
    text: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if text.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    match text.chars().find(|c| !allowed(*c)) {
        Some(found) => Err(IdError::BadChar { kind, found }),
        None => Ok(()),
    }
}

/// Implements Display, FromStr, Serialize and Deserialize for a newtype over `Arc<str>` whose
/// constructor is `fn validate(&str) -> Result<(), IdError>`.
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses and validates the wire form.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                Self::validate(text)?;
                Ok(Self(Arc::from(text)))
            }

            /// The wire form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::parse(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn is_localpart_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '=' | '-')
}

fn is_opaque_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

string_id! {
    /// A hearth's name, DNS-like: `eu.example.org`, `localhost`, optionally with `:port`.
    ServerName
}

impl ServerName {
    fn validate(text: &str) -> Result<(), IdError> {
        const KIND: &str = "server name";
        check_chars(KIND, text, 255, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':')
        })?;
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let malformed = IdError::Malformed {
            kind: KIND,
            form: "host or host:port with lower-case DNS labels",
        };
        if host.is_empty()
            || host
                .split('.')
                .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
        {
            return Err(malformed);
        }
        if let Some(port) = port
            && port.parse::<u16>().is_err()
        {
            return Err(malformed);
        }
        Ok(())
    }
}

string_id! {
    /// A user: `@alice:eu.example.org`. The localpart is lower-case `[a-z0-9._=-]`, at most 64 bytes.
    UserId
}

impl UserId {
    /// Maximum length of a localpart in bytes.
    pub const MAX_LOCALPART: usize = 64;

    fn validate(text: &str) -> Result<(), IdError> {
        const KIND: &str = "user id";
        let rest = text.strip_prefix('@').ok_or(IdError::MissingSigil {
            kind: KIND,
            sigil: '@',
        })?;
        let (local, server) = rest.split_once(':').ok_or(IdError::Malformed {
            kind: KIND,
            form: "@localpart:server",
        })?;
        check_chars(
            "user localpart",
            local,
            Self::MAX_LOCALPART,
            is_localpart_char,
        )?;
        ServerName::validate(server)
    }

    /// Builds a user id from a validated localpart and server name.
    pub fn new(localpart: &str, server: &ServerName) -> Result<Self, IdError> {
        Self::parse(&format!("@{localpart}:{server}"))
    }

    /// Checks a bare localpart (what a person types when registering).
    pub fn validate_localpart(localpart: &str) -> Result<(), IdError> {
        check_chars(
            "user localpart",
            localpart,
            Self::MAX_LOCALPART,
            is_localpart_char,
        )
    }

    /// The part between `@` and `:`.
    pub fn localpart(&self) -> &str {
        let rest = &self.0[1..];
        rest.split_once(':').map(|(l, _)| l).unwrap_or(rest)
    }

    /// The server part, the user's own hearth.
    pub fn server_name(&self) -> ServerName {
        let server = self.0.split_once(':').map(|(_, s)| s).unwrap_or_default();
        ServerName(Arc::from(server))
    }
}

string_id! {
    /// A room: `!opaque:eu.example.org`; the server named is the room's home.
    RoomId
}

impl RoomId {
    fn validate(text: &str) -> Result<(), IdError> {
        const KIND: &str = "room id";
        let rest = text.strip_prefix('!').ok_or(IdError::MissingSigil {
            kind: KIND,
            sigil: '!',
        })?;
        let (opaque, server) = rest.split_once(':').ok_or(IdError::Malformed {
            kind: KIND,
            form: "!opaque:server",
        })?;
        check_chars("room id opaque part", opaque, 64, is_opaque_char)?;
        ServerName::validate(server)
    }

    /// Builds a room id from an opaque part and the home server.
    pub fn new(opaque: &str, home: &ServerName) -> Result<Self, IdError> {
        Self::parse(&format!("!{opaque}:{home}"))
    }

    /// The room's home hearth, which orders its events.
    pub fn home(&self) -> ServerName {
        let server = self.0.split_once(':').map(|(_, s)| s).unwrap_or_default();
        ServerName(Arc::from(server))
    }
}

string_id! {
    /// A device of a user: `[A-Za-z0-9_-]`, at most 32 bytes. The hearth assigns it at login.
    DeviceId
}

impl DeviceId {
    fn validate(text: &str) -> Result<(), IdError> {
        check_chars("device id", text, 32, is_opaque_char)
    }
}

string_id! {
    /// A client-chosen transaction id, unique per device: `[A-Za-z0-9._~-]`, at most 64 bytes.
    TxnId
}

impl TxnId {
    fn validate(text: &str) -> Result<(), IdError> {
        check_chars("txn id", text, 64, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')
        })
    }
}

/// A time-sortable id of an event: its `origin_ts` (ms, 20 digits, zero-padded), `-`, and the
/// first 20 hex digits of its event id. Sorted as text, ids sort by time across rooms (ties
/// within a millisecond by hash). Derived from the event, so any hearth or client computes the
/// same one, and the content hash stays the event's identity. Within a room, `seq` is the order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimeId(String);

impl TimeId {
    pub fn of(origin_ts: u64, event_id: &EventId) -> Self {
        let hash: String = event_id.0[..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // 20 digits hold any u64: every id has the same width, so text order is time order.
        Self(format!("{origin_ts:020}-{hash}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hearth's ed25519 public key. On the wire the 32 bytes as they are (serde-transparent, so
/// every encoding is what `[u8; 32]` was); in text, unpadded base64url (what `hearth
/// server-key` prints and a config's `key` holds).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the text form; trailing `=` padding is tolerated (some tools add it).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let malformed = IdError::Malformed {
            kind: "public key",
            form: "43 characters of unpadded base64url (32 bytes)",
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| malformed.clone())?;
        Ok(Self(bytes.try_into().map_err(|_| malformed)?))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        Self::parse(text)
    }
}

/// An event id: the SHA-256 of the event's encoded envelope. Wire form `$` + unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub [u8; 32]);

impl EventId {
    /// The id of an encoded envelope.
    pub fn of_bytes(encoded: &[u8]) -> Self {
        Self(Sha256::digest(encoded).into())
    }

    /// Parses the wire form.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        const KIND: &str = "event id";
        let rest = text.strip_prefix('$').ok_or(IdError::MissingSigil {
            kind: KIND,
            sigil: '$',
        })?;
        let malformed = IdError::Malformed {
            kind: KIND,
            form: "$ followed by 43 characters of unpadded base64url",
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(rest)
            .map_err(|_| malformed.clone())?;
        let array: [u8; 32] = bytes.try_into().map_err(|_| malformed)?;
        Ok(Self(array))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        Self::parse(text)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod public_key_tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_tolerates_padding() {
        let key = PublicKey([0xfb; 32]);
        let text = key.to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(PublicKey::parse(&text), Ok(key));
        assert_eq!(format!("{text}=").parse::<PublicKey>(), Ok(key));
        for bad in ["", "not base64!", &text[..42], &format!("{text}AA")] {
            assert!(PublicKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wire_encoding_is_the_bare_32_bytes() {
        let key = PublicKey(std::array::from_fn(|i| i as u8));
        assert_eq!(
            postcard::to_stdvec(&key).unwrap(),
            postcard::to_stdvec(&key.0).unwrap()
        );
        assert_eq!(postcard::to_stdvec(&key).unwrap(), key.0.to_vec());
    }
}

#[cfg(test)]
mod time_id_tests {
    use super::*;

    #[test]
    fn time_ids_sort_by_time_then_hash_and_are_fixed_width() {
        let a = EventId([0xff; 32]);
        let b = EventId([0x00; 32]);
        let earlier = TimeId::of(1_764_562_800_123, &a);
        let later = TimeId::of(1_764_562_800_124, &b);
        assert!(earlier < later);
        assert_eq!(
            earlier.as_str(),
            "00000001764562800123-ffffffffffffffffffff"
        );
        let same_ms = TimeId::of(1_764_562_800_123, &b);
        assert!(same_ms < earlier && same_ms != earlier);
        assert!(TimeId::of(9_999_999_999_999, &a) < TimeId::of(10_000_000_000_000, &b));
        assert!(TimeId::of(u64::MAX, &b) > TimeId::of(0, &a));
        assert_eq!(TimeId::of(u64::MAX, &b).as_str().len(), 41);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn user_id_parts_round_trip() {
        let user = UserId::parse("@alice:eu.example.org").unwrap();
        assert_eq!(user.localpart(), "alice");
        assert_eq!(user.server_name().as_str(), "eu.example.org");
        assert_eq!(user.to_string(), "@alice:eu.example.org");
        let with_port = UserId::parse("@bob:localhost:8448").unwrap();
        assert_eq!(with_port.server_name().as_str(), "localhost:8448");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "alice:x",
            "@:x",
            "@Alice:x",
            "@a:",
            "@a:-x",
            "@a:x..y",
            "@a:x:99999",
            "@a b:x",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(RoomId::parse("!abc").is_err());
        assert!(RoomId::parse("!a/b:x").is_err());
        assert!(DeviceId::parse(&"A".repeat(33)).is_err());
        assert!(TxnId::parse("has space").is_err());
        assert!(EventId::parse("$short").is_err());
    }

    #[test]
    fn event_id_round_trips_through_text_and_json() {
        let id = EventId::of_bytes(b"hello");
        assert_eq!(EventId::parse(&id.to_string()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
    }

    #[test]
    fn ids_reject_bad_json() {
        assert!(serde_json::from_str::<UserId>("\"@x\"").is_err());
        assert!(serde_json::from_str::<RoomId>("42").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,80}") {
            let _ = UserId::parse(&text);
            let _ = RoomId::parse(&text);
            let _ = ServerName::parse(&text);
            let _ = EventId::parse(&text);
            let _ = TxnId::parse(&text);
        }

        #[test]
        fn valid_user_ids_round_trip(local in "[a-z0-9._=-]{1,64}", host in "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}") {
            let server = ServerName::parse(&host).unwrap();
            let user = UserId::new(&local, &server).unwrap();
            prop_assert_eq!(user.localpart(), local.as_str());
            prop_assert_eq!(user.server_name(), server);
            prop_assert_eq!(UserId::parse(&user.to_string()).unwrap(), user);
        }
    }
}
