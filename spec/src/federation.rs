//! Hearth-to-hearth wire format: signed federation envelopes, the stream framing that carries
//! them over QUIC, and the per-envelope outcomes a receiver answers with. See
//! `spec/federation.md`.
//!
//! A [`FedEnvelope`] is encoded with postcard, canonically (like [`crate::Envelope`]): decoding
//! rejects trailing bytes and anything that does not re-encode to the same bytes. The origin signs
//! `SIGNING_CONTEXT || encoded bytes` and sends `signature (64 bytes) || encoded bytes`. Receivers
//! verify the signature over the bytes they received, never over a re-serialisation.

use serde::{Deserialize, Serialize};

use crate::api::{ClaimedKeyPackage, KeyDevices};
use crate::client::{PresenceState, ReceiptKind};
use crate::id::{DeviceId, PublicKey, RoomId, ServerName, UserId};

/// The federation envelope version this crate writes and accepts.
pub const FED_VERSION: u8 = 1;

/// Prefixed to the encoded envelope before signing, so a federation signature can never be
/// mistaken for a signature over anything else the key signs (tokens, certificates).
pub const SIGNING_CONTEXT: &[u8] = b"hearth/federation/v1\0";

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Largest signed envelope a hearth accepts (signature included): an event with the largest
/// payload a hearth allows by default (`limits.max_event_bytes`, 512 KiB) and room for its
/// headers.
pub const MAX_SIGNED_ENVELOPE: usize = 640 * 1024;

/// Most bytes of frames a sender writes in one batch stream (a single frame may be larger than
/// what is left, never larger than [`MAX_SIGNED_ENVELOPE`]). Receivers read at least 8 MiB.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Most envelopes in one stream (one batch).
pub const MAX_FRAMES_PER_STREAM: usize = 1024;

/// Most signals in one [`FedBody::Ephemeral`] envelope.
pub const MAX_SIGNALS_PER_ENVELOPE: usize = 512;

/// One hop of hearth-to-hearth traffic, signed by its origin for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FedEnvelope {
    pub version: u8,
    /// The hearth that built and signed this envelope.
    pub origin: ServerName,
    /// The only hearth that may accept it.
    pub destination: ServerName,
    /// The origin's ed25519 public key that made the signature.
    pub signer: PublicKey,
    /// Milliseconds since the Unix epoch on the origin's clock when it signed.
    pub origin_ts: u64,
    /// Random; makes every transmission (including retries) a distinct envelope.
    pub nonce: u64,
    pub body: FedBody,
}

/// What a federation envelope carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedBody {
    /// A member hearth hands its user's event to the room's home to be sequenced. `event` is the
    /// canonical [`crate::Envelope`] encoding; its SHA-256 is the event id everywhere.
    Submit { event: Vec<u8> },
    /// The room's home hands a member hearth an event at its place in the room.
    Sequenced { seq: u64, event: Vec<u8> },
    /// The origin announces a new key, signed by its current key. Receivers that know the signer
    /// for the origin add `new_key`; the signer keeps verifying until `old_valid_until_ms`.
    KeyRotation {
        new_key: PublicKey,
        old_valid_until_ms: u64,
    },
    /// Receipts, typing and presence of the origin's users, batched. Never queued durably: what
    /// cannot be delivered now is dropped (typing and presence are stale soon; a later receipt
    /// carries a higher mark). The receiver checks every signal and refuses the whole envelope
    /// if one fails.
    Ephemeral { signals: Vec<Signal> },
    /// Origin → relay: hold `sealed` for `destination`, which has been unreachable, and hand it
    /// over when it returns. The relay learns only the destination and the size.
    Custody {
        destination: ServerName,
        sealed: SealedEnvelope,
    },
    /// Relay → destination: an envelope the relay held for `origin`. Inside the seal is
    /// `origin`'s signed envelope for the destination, checked as if `origin` had sent it.
    Relayed {
        origin: ServerName,
        sealed: SealedEnvelope,
    },
    /// A device of the origin claims MLS key packages of `user`, a user of the destination: one
    /// per (listed) device, each one-time package handed out once (`spec/e2ee.md`). Travels
    /// alone in its stream, never queued; answered with [`StreamReply::KeyPackages`].
    ClaimKeyPackages {
        user: UserId,
        devices: Option<Vec<DeviceId>>,
    },
    /// A device of the origin fetches part of an attachment blob the destination stores: at most
    /// [`MAX_MEDIA_CHUNK`] bytes from `offset` of the blob whose SHA-256 is `media_id`. Travels
    /// alone in its stream, never queued; answered with [`StreamReply::MediaChunk`].
    FetchMedia {
        media_id: [u8; 32],
        offset: u64,
        len: u32,
    },
    /// A device of the origin asks which end-to-end devices (logged in, with key packages) the
    /// destination's `users` have, to make a room's MLS group match its members' devices. At
    /// most [`crate::api::MAX_USERS_PER_KEY_REQUEST`] users. Travels alone in its stream, never
    /// queued; answered with [`StreamReply::Devices`].
    QueryDevices { users: Vec<UserId> },
}

/// Most bytes of a blob one [`FedBody::FetchMedia`] asks for, so the answer stays well inside
/// the 1 MiB a sender reads of a reply.
pub const MAX_MEDIA_CHUNK: u32 = 512 * 1024;

/// A signed envelope sealed to its destination's key (see `spec/federation.md`, "Sealed
/// relays"): X25519 with a fresh ephemeral key, HKDF-SHA256, ChaCha20-Poly1305.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedEnvelope {
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The signed envelope (`signature || encoded`), encrypted, with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// One ephemeral signal about a user of the origin hearth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// `user` started or stopped typing in `room`. The receiver expires it on its own clock.
    Typing {
        room: RoomId,
        user: UserId,
        typing: bool,
    },
    /// `user` has received or read `room` up to `seq` (a high-water mark; it only rises).
    Receipt {
        room: RoomId,
        user: UserId,
        kind: ReceiptKind,
        seq: u64,
    },
    /// `user` is online or went offline. The origin repeats `Online` while the user stays
    /// online (see `spec/federation.md`), so a receiver that stops hearing it times the user out.
    /// `last_seen_ms` is absent when the user hides their presence (receivers then show them
    /// offline with no last-seen time, as the origin does).
    Presence {
        user: UserId,
        state: PresenceState,
        last_seen_ms: Option<u64>,
    },
}

impl Signal {
    /// The user the signal is about (the origin must serve them).
    pub fn user(&self) -> &UserId {
        match self {
            Self::Typing { user, .. }
            | Self::Receipt { user, .. }
            | Self::Presence { user, .. } => user,
        }
    }
}

/// Why bytes are not a valid federation envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FedDecodeError {
    #[error("signed envelope is shorter than a signature")]
    Truncated,
    #[error("signed envelope is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("envelope is not valid postcard: {0}")]
    Malformed(#[source] postcard::Error),
    #[error("envelope has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("envelope encoding is not canonical")]
    NotCanonical,
    #[error("federation envelope version {0} is not supported")]
    UnsupportedVersion(u8),
}

impl From<crate::envelope::DecodeError> for FedDecodeError {
    fn from(e: crate::envelope::DecodeError) -> Self {
        use crate::envelope::DecodeError as E;
        match e {
            E::Malformed(m) => Self::Malformed(m),
            E::TrailingBytes(n) => Self::TrailingBytes(n),
            E::NotCanonical => Self::NotCanonical,
            E::UnsupportedVersion(v) => Self::UnsupportedVersion(v),
        }
    }
}

impl FedEnvelope {
    /// The canonical encoding (what is signed, after [`SIGNING_CONTEXT`]).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("federation envelope encodes")
    }

    /// Decodes and checks canonical form and version.
    pub fn decode(bytes: &[u8]) -> Result<Self, FedDecodeError> {
        Ok(crate::codec::decode_canonical(
            bytes,
            FED_VERSION,
            |e: &Self| e.version,
        )?)
    }
}

/// The message a signature covers: the context, then the exact encoded envelope.
pub fn signing_message(encoded: &[u8]) -> Vec<u8> {
    crate::codec::with_context(SIGNING_CONTEXT, encoded)
}

/// A signed envelope as it travels: `signature || encoded envelope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEnvelope<'a> {
    pub signature: &'a [u8; SIGNATURE_LEN],
    pub encoded: &'a [u8],
}

impl<'a> SignedEnvelope<'a> {
    /// Splits wire bytes; checks only the size (the signature is checked by the receiver).
    pub fn split(bytes: &'a [u8]) -> Result<Self, FedDecodeError> {
        if bytes.len() > MAX_SIGNED_ENVELOPE {
            return Err(FedDecodeError::TooLarge(bytes.len()));
        }
        let (signature, encoded) = bytes
            .split_first_chunk::<SIGNATURE_LEN>()
            .ok_or(FedDecodeError::Truncated)?;
        Ok(Self { signature, encoded })
    }

    /// Joins a signature and an encoded envelope into wire bytes.
    pub fn join(signature: &[u8; SIGNATURE_LEN], encoded: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNATURE_LEN + encoded.len());
        out.extend_from_slice(signature);
        out.extend_from_slice(encoded);
        out
    }
}

/// What a receiver did with one envelope. `Rejected` is permanent: the sender drops the
/// envelope. `Retry` is transient: the sender keeps it and tries again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Durable on the receiver.
    Stored,
    /// The receiver already had it (same event id or same place); nothing was written.
    Duplicate,
    Rejected(RejectCode),
    Retry(RetryCode),
}

/// Permanent refusals. Nothing from a refused envelope is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectCode {
    /// Not a valid signed envelope (bad postcard, trailing bytes, not canonical, short).
    Malformed,
    UnsupportedVersion,
    /// The origin is not a hearth this receiver knows.
    UnknownOrigin,
    /// The signer is not a key of the origin.
    UnknownKey,
    /// The signer was revoked or its grace period is over.
    RevokedKey,
    /// The signature does not verify.
    BadSignature,
    /// The envelope is for another hearth.
    WrongDestination,
    /// The envelope's origin is not the authenticated peer that sent it.
    OriginMismatch,
    /// Signed too long ago (outside the freshness window).
    Stale,
    /// Signed too far in the future.
    FromTheFuture,
    /// The exact envelope was seen before.
    Replayed,
    /// The inner event is not a valid event envelope.
    BadEvent,
    /// The origin does not serve the event's sender.
    ForeignSender,
    /// A submit to a hearth that is not the room's home, or a sequenced event not from its home.
    NotHome,
    /// The room does not exist.
    UnknownRoom,
    /// The sender is not a member of the room.
    NotMember,
    /// The room's rules refuse it (direct-room invite, already a member, room full, bad create).
    Forbidden,
    /// Larger than the receiver's limit.
    TooLarge,
    /// This hearth does not hold envelopes for that destination (it is not a relay, does not
    /// relay for the origin, or the destination is unknown or itself).
    CustodyRefused,
    /// A relayed seal does not open for this hearth (altered, or not sealed to it).
    BadSeal,
    /// An MLS commit made in an epoch the room has left (another commit won that epoch).
    StaleEpoch,
    /// The receiver stores no blob by that id.
    UnknownMedia,
}

/// Transient refusals: try again later, in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RetryCode {
    /// The peer sent faster than its budget.
    RateLimited,
    /// A sequenced event arrived before the ones before it.
    OutOfOrder,
    /// The receiver could not store it now (storage, shutdown).
    Unavailable,
    /// A relay's custody quota for the origin is full; try again when it has handed some over.
    CustodyFull,
}

/// The receiver's answer to one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamReply {
    /// One outcome per envelope, in order.
    Outcomes(Vec<Outcome>),
    /// The stream itself was malformed; nothing in it was looked at or stored.
    Refused(StreamError),
    /// The answer to a stream carrying one `ClaimKeyPackages` envelope that passed its checks.
    KeyPackages(Vec<ClaimedKeyPackage>),
    /// The answer to a stream carrying one `FetchMedia` envelope that passed its checks: the
    /// blob's whole length and the bytes asked for (fewer at its end).
    MediaChunk { total: u64, bytes: Vec<u8> },
    /// The answer to a stream carrying one `QueryDevices` envelope that passed its checks: each
    /// user asked for, with its devices (none for a user the destination does not have).
    Devices(Vec<KeyDevices>),
}

/// Why a whole stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StreamError {
    #[error("a frame length is over the limit")]
    FrameTooLarge,
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("more frames than a stream may carry")]
    TooManyFrames,
    #[error("the stream carried no frame")]
    Empty,
    #[error("the stream took too long")]
    Timeout,
    #[error("the stream is larger than the receiver's limit")]
    TooLarge,
}

/// Splits a stream's bytes (`u32` big-endian length, then that many bytes, repeated) into frames.
pub fn split_frames(mut bytes: &[u8]) -> Result<Vec<&[u8]>, StreamError> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or(StreamError::Truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_SIGNED_ENVELOPE {
            return Err(StreamError::FrameTooLarge);
        }
        if rest.len() < len {
            return Err(StreamError::Truncated);
        }
        if frames.len() == MAX_FRAMES_PER_STREAM {
            return Err(StreamError::TooManyFrames);
        }
        let (frame, rest) = rest.split_at(len);
        frames.push(frame);
        bytes = rest;
    }
    if frames.is_empty() {
        return Err(StreamError::Empty);
    }
    Ok(frames)
}

/// Appends one length-prefixed frame.
pub fn push_frame(out: &mut Vec<u8>, frame: &[u8]) {
    let len = u32::try_from(frame.len()).expect("frames are far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
}

impl StreamReply {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("stream reply encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FedDecodeError> {
        Ok(crate::codec::decode_exact(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> FedEnvelope {
        FedEnvelope {
            version: FED_VERSION,
            origin: ServerName::parse("a.example").unwrap(),
            destination: ServerName::parse("b.example").unwrap(),
            signer: PublicKey([7; 32]),
            origin_ts: 1_795_000_000_000,
            nonce: 42,
            body: FedBody::Sequenced {
                seq: 3,
                event: vec![1, 2, 3],
            },
        }
    }

    #[test]
    fn envelope_round_trips_and_rejects_trailing_and_versions() {
        let bytes = sample().encode();
        assert_eq!(FedEnvelope::decode(&bytes).unwrap(), sample());
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            FedEnvelope::decode(&longer),
            Err(FedDecodeError::TrailingBytes(1))
        );
        let mut v2 = sample();
        v2.version = 2;
        assert_eq!(
            FedEnvelope::decode(&v2.encode()),
            Err(FedDecodeError::UnsupportedVersion(2))
        );
        assert!(FedEnvelope::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn non_canonical_varint_is_rejected() {
        // origin_ts re-encoded with a redundant continuation byte.
        let env = sample();
        let bytes = env.encode();
        let ts = postcard::to_stdvec(&env.origin_ts).unwrap();
        let at = bytes
            .windows(ts.len())
            .position(|w| w == ts.as_slice())
            .unwrap();
        let mut padded = bytes[..at].to_vec();
        let mut long_ts = ts.clone();
        *long_ts.last_mut().unwrap() |= 0x80;
        long_ts.push(0);
        padded.extend_from_slice(&long_ts);
        padded.extend_from_slice(&bytes[at + ts.len()..]);
        assert!(FedEnvelope::decode(&padded).is_err());
    }

    #[test]
    fn frames_split_and_bad_streams_are_typed() {
        let mut stream = Vec::new();
        push_frame(&mut stream, b"abc");
        push_frame(&mut stream, b"");
        push_frame(&mut stream, b"de");
        assert_eq!(
            split_frames(&stream).unwrap(),
            vec![&b"abc"[..], &b""[..], &b"de"[..]]
        );
        assert_eq!(split_frames(&[]), Err(StreamError::Empty));
        assert_eq!(
            split_frames(&stream[..stream.len() - 1]),
            Err(StreamError::Truncated)
        );
        let mut garbage = stream.clone();
        garbage.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(split_frames(&garbage), Err(StreamError::Truncated));
        let huge = (MAX_SIGNED_ENVELOPE as u32 + 1).to_be_bytes();
        assert_eq!(split_frames(&huge), Err(StreamError::FrameTooLarge));
        let mut many = Vec::new();
        for _ in 0..=MAX_FRAMES_PER_STREAM {
            push_frame(&mut many, b"x");
        }
        assert_eq!(split_frames(&many), Err(StreamError::TooManyFrames));
    }

    #[test]
    fn signed_envelope_split_checks_size() {
        assert_eq!(
            SignedEnvelope::split(&[0; 63]),
            Err(FedDecodeError::Truncated)
        );
        let joined = SignedEnvelope::join(&[9; 64], b"body");
        let split = SignedEnvelope::split(&joined).unwrap();
        assert_eq!(split.signature, &[9; 64]);
        assert_eq!(split.encoded, b"body");
        assert!(matches!(
            SignedEnvelope::split(&vec![0; MAX_SIGNED_ENVELOPE + 1]),
            Err(FedDecodeError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = FedEnvelope::decode(&bytes);
            let _ = StreamReply::decode(&bytes);
            let _ = split_frames(&bytes);
            let _ = SignedEnvelope::split(&bytes);
        }
    }
}
