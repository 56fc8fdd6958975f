//! The event envelope: what a room's history is made of, and its one binary encoding.
//!
//! An envelope is encoded with postcard (a stable, documented serde format: varint integers,
//! length-prefixed strings and byte arrays, enum variants as varint indexes). The encoding is
//! canonical: [`Envelope::decode`] rejects trailing bytes and any input that does not re-encode to
//! the same bytes, so one envelope has exactly one encoding and one [`EventId`], the SHA-256 of
//! those bytes. The sequence number is not part of the envelope: the room's home assigns it, and
//! the same envelope keeps its id wherever it travels.

use serde::{Deserialize, Serialize};

pub use crate::codec::DecodeError;
use crate::id::{DeviceId, EventId, RoomId, TimeId, TxnId, UserId};

/// The envelope format version this crate writes and accepts.
pub const ENVELOPE_VERSION: u8 = 1;

/// One room event as its sender's hearth built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope {
    pub version: u8,
    pub room_id: RoomId,
    pub sender: UserId,
    pub sender_device: DeviceId,
    /// The sender's transaction id; with the device, it makes every envelope unique.
    pub txn_id: TxnId,
    /// Milliseconds since the Unix epoch on the origin hearth's clock.
    pub origin_ts: u64,
    pub content: Content,
}

/// What an event says.
///
/// In JSON an enum is externally tagged (`{"message": {"payload": "aGk="}}`); postcard cannot
/// decode internally tagged enums, and the envelope has a single serde definition for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// The first event of every room.
    Create {
        kind: RoomKind,
        name: Option<String>,
    },
    /// A membership change of `target`, made by the sender.
    Member {
        target: UserId,
        membership: Membership,
    },
    /// A message: an MLS `PrivateMessage` (`spec/e2ee.md`), opaque bytes to the hearth.
    Message {
        #[serde(with = "crate::b64")]
        #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64))]
        payload: Vec<u8>,
    },
    /// An MLS commit made in `epoch`, and the Welcome for the devices it adds. The room's home
    /// takes exactly one commit per epoch, in room order; the Welcome travels inside the commit's
    /// event, so it reaches nobody unless its commit won the epoch.
    Commit {
        epoch: u64,
        #[serde(with = "crate::b64")]
        #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64))]
        commit: Vec<u8>,
        #[serde(default, with = "crate::b64::option")]
        #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64_option))]
        welcome: Option<Vec<u8>>,
    },
    /// A message the hearth removed (room retention, an admin's purge, or its sender's
    /// erasure), in its place: the slot keeps its sequence number, event id, sender and time so
    /// that every device keeps one gapless order. Never sent by a client or submitted by a peer.
    Purged {},
    /// An admin of a group makes `target`, a member, an admin (`admin: true`) or takes the role
    /// back (`false`). Groups only (`spec/semantics.md`).
    Admin { target: UserId, admin: bool },
}

/// Whether a room is a 1:1 chat or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Exactly two people; nobody else can be invited.
    Direct,
    /// A named group of up to the hearth's member limit.
    Group,
}

/// A membership state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    Join,
    Leave,
}

impl Envelope {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        postcard::to_stdvec(self).expect("envelope encodes")
    }

    /// Decodes and checks canonical form and version.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::codec::decode_canonical(bytes, ENVELOPE_VERSION, |e: &Self| e.version)
    }

    /// The id of this envelope: the SHA-256 of its encoding.
    pub fn event_id(&self) -> EventId {
        EventId::of_bytes(&self.encode())
    }
}

/// A sequenced event as clients receive it (history pages, sync, live frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventView {
    pub room_id: RoomId,
    /// The room's gapless sequence number, from 1.
    pub seq: u64,
    pub event_id: EventId,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub txn_id: TxnId,
    pub origin_ts: u64,
    /// Sorts events of all rooms by time ([`TimeId`]); derived from `origin_ts` and `event_id`.
    pub time_id: TimeId,
    pub content: Content,
}

impl EventView {
    /// The client view of an envelope sequenced at `seq`.
    pub fn new(seq: u64, event_id: EventId, envelope: Envelope) -> Self {
        Self {
            room_id: envelope.room_id,
            seq,
            sender: envelope.sender,
            sender_device: envelope.sender_device,
            txn_id: envelope.txn_id,
            origin_ts: envelope.origin_ts,
            time_id: TimeId::of(envelope.origin_ts, &event_id),
            event_id,
            content: envelope.content,
        }
    }

    /// Rebuilds the envelope, e.g. to check `event_id` on the client.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            room_id: self.room_id.clone(),
            sender: self.sender.clone(),
            sender_device: self.sender_device.clone(),
            txn_id: self.txn_id.clone(),
            origin_ts: self.origin_ts,
            content: self.content.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(payload: Vec<u8>) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            room_id: RoomId::parse("!room1:localhost").unwrap(),
            sender: UserId::parse("@alice:localhost").unwrap(),
            sender_device: DeviceId::parse("DEVICEA").unwrap(),
            txn_id: TxnId::parse("t1").unwrap(),
            origin_ts: 1_700_000_000_000,
            content: Content::Message { payload },
        }
    }

    #[test]
    fn envelope_round_trips() {
        let env = sample(b"hello".to_vec());
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        assert_eq!(env.event_id(), EventId::of_bytes(&bytes));
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let mut bytes = sample(vec![1, 2, 3]).encode();
        bytes.push(0);
        assert_eq!(Envelope::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn truncated_envelope_is_rejected() {
        let bytes = sample(vec![1, 2, 3]).encode();
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn overlong_varint_is_not_canonical() {
        let env = sample(vec![]);
        let bytes = env.encode();
        // origin_ts is a varint; re-encode the length prefix of the empty payload (last byte, 0)
        // as a two-byte varint 0x80 0x00, which decodes to the same value.
        let mut overlong = bytes[..bytes.len() - 1].to_vec();
        overlong.extend_from_slice(&[0x80, 0x00]);
        assert!(Envelope::decode(&overlong).is_err());
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut env = sample(vec![]);
        env.version = 9;
        assert_eq!(
            Envelope::decode(&env.encode()),
            Err(DecodeError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn event_view_rebuilds_the_same_envelope() {
        let env = sample(b"x".to_vec());
        let view = EventView::new(7, env.event_id(), env.clone());
        assert_eq!(view.envelope(), env);
        let json = serde_json::to_string(&view).unwrap();
        let back: EventView = serde_json::from_str(&json).unwrap();
        assert_eq!(back, view);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Envelope::decode(&bytes);
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2000), ts in any::<u64>()) {
            let mut env = sample(payload);
            env.origin_ts = ts;
            prop_assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }
}
