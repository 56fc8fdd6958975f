//! A hostile peer against a real hearth's federation endpoint (QUIC, mutual TLS).
//!
//! The peer `evil.test` is configured on the hearth `home.test` and speaks the real protocol
//! through `hearth-federation`'s transport, but builds what it sends by hand: forged, replayed,
//! stale, misaddressed, oversized, truncated and malformed envelopes and streams. Each one gets
//! its typed refusal, and afterwards the room holds exactly the events that were legitimately
//! sent: nothing from a refused envelope is stored.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use hearth_crypto::{ServerKey, sign_envelope};
use hearth_federation::{Directory, Inbound, KeyRing, PeerConfig, Transport, TransportConfig};
use hearth_node::config::PeerEntry;
use hearth_spec::client::{PresenceState, ReceiptKind, ServerFrame};
use hearth_spec::envelope::ENVELOPE_VERSION;
use hearth_spec::federation::{
    FED_VERSION, FedBody, FedEnvelope, MAX_FRAMES_PER_STREAM, MAX_SIGNED_ENVELOPE, Outcome,
    RejectCode, RetryCode, SealedEnvelope, Signal, SignedEnvelope, StreamError, StreamReply,
    push_frame,
};
use hearth_spec::{
    Content, DeviceId, Envelope, Membership, RoomId, RoomKind, ServerName, TxnId, UserId,
};
use hearth_tests::{TestHearth, now_ms};

const MARKER: &[u8] = b"EVIL-MARKER";

struct Sink;

impl Inbound for Sink {
    async fn receive(&self, _peer: ServerName, envelopes: Vec<FedEnvelope>) -> Vec<Outcome> {
        vec![Outcome::Stored; envelopes.len()]
    }

    /// Serves lies: a blob id of all 0xff claims to be 1 TB; any other id gets 10 bytes that
    /// do not hash to it.
    async fn fetch_media(
        &self,
        _peer: ServerName,
        media_id: [u8; 32],
        _offset: u64,
        _len: u32,
    ) -> Result<(u64, Vec<u8>), Outcome> {
        if media_id == [0xff; 32] {
            return Ok((1 << 40, vec![0; 1024]));
        }
        Ok((10, b"not-it-at!".to_vec()))
    }
}

fn b64(key: &ServerKey) -> String {
    key.public_key().to_string()
}

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

/// LEB128, as postcard writes a u64.
fn postcard_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

struct World {
    hearth: TestHearth,
    home: ServerName,
    evil: Transport,
    evil_key: ServerKey,
    other_key: ServerKey,
    revoked_key: ServerKey,
    expired_key: ServerKey,
    alice: hearth_client::Client,
    room: RoomId,
    closed_room: RoomId,
    dm: RoomId,
}

impl World {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A world whose hearth's configuration `tweak` adjusts.
    async fn with(tweak: impl FnOnce(&mut hearth_node::config::Config)) -> Self {
        let evil_key = ServerKey::generate();
        let other_key = ServerKey::generate();
        let revoked_key = ServerKey::generate();
        let expired_key = ServerKey::generate();
        let evil_directory = Arc::new(RwLock::new(Directory::default()));
        let evil = Transport::start(
            TransportConfig::new(name("evil.test"), "127.0.0.1:0".parse().unwrap()),
            Arc::new(KeyRing::single(Arc::new(
                ServerKey::from_bytes(&evil_key.to_bytes()[..]).unwrap(),
            ))),
            evil_directory.clone(),
            Arc::new(Sink),
        )
        .unwrap();
        let evil_addr = evil.local_addr();
        let mut home_key = None;
        let hearth = TestHearth::start_with(|c| {
            c.server_name = name("home.test");
            c.limits.max_event_bytes = 1024;
            home_key = Some(
                hearth_node::ops::keys::load_or_generate(&hearth_node::ops::data_dir::key_path(
                    &c.data_dir,
                ))
                .unwrap(),
            );
            c.federation.peers = vec![
                PeerEntry {
                    name: name("evil.test"),
                    address: evil_addr,
                    key: b64(&evil_key),
                    previous_keys: vec![
                        hearth_node::config::PreviousKey {
                            key: b64(&revoked_key),
                            valid_until_ms: u64::MAX,
                        },
                        hearth_node::config::PreviousKey {
                            key: b64(&expired_key),
                            valid_until_ms: 1,
                        },
                    ],
                },
                PeerEntry {
                    name: name("other.test"),
                    address: "127.0.0.1:9".parse().unwrap(),
                    key: b64(&other_key),
                    previous_keys: vec![],
                },
            ];
            c.federation.revoked_keys = vec![b64(&revoked_key)];
            tweak(c);
        })
        .await;
        let home_key = home_key.unwrap();
        *evil_directory.write().unwrap() = Directory::new(
            vec![PeerConfig {
                name: name("home.test"),
                address: hearth.running.federation_addr,
                key: home_key.public_key(),
                previous_keys: vec![],
            }],
            vec![],
        );
        let mut alice = hearth.user("alice").await;
        let mallory = UserId::parse("@mallory:evil.test").unwrap();
        let olga = UserId::parse("@olga:other.test").unwrap();
        let room = alice
            .create_room(RoomKind::Group, Some("r"), &[mallory.clone(), olga])
            .await
            .unwrap()
            .room_id;
        let closed_room = alice
            .create_room(RoomKind::Group, Some("closed"), &[])
            .await
            .unwrap()
            .room_id;
        let dm = alice
            .create_room(RoomKind::Direct, None, &[mallory])
            .await
            .unwrap()
            .room_id;
        Self {
            hearth,
            home: name("home.test"),
            evil,
            evil_key,
            other_key,
            revoked_key,
            expired_key,
            alice,
            room,
            closed_room,
            dm,
        }
    }

    fn event(&self, room: &RoomId, sender: &str, content: Content) -> Vec<u8> {
        Envelope {
            version: ENVELOPE_VERSION,
            room_id: room.clone(),
            sender: UserId::parse(sender).unwrap(),
            sender_device: DeviceId::parse("EVILDEV").unwrap(),
            txn_id: TxnId::parse(&format!("t{}", rand::random::<u64>())).unwrap(),
            origin_ts: now_ms(),
            content,
        }
        .encode()
    }

    fn message(&self, room: &RoomId, sender: &str) -> Vec<u8> {
        let mut payload = MARKER.to_vec();
        payload.extend_from_slice(&rand::random::<u64>().to_be_bytes());
        self.event(room, sender, Content::Message { payload })
    }

    fn envelope(&self, body: FedBody) -> FedEnvelope {
        FedEnvelope {
            version: FED_VERSION,
            origin: name("evil.test"),
            destination: self.home.clone(),
            signer: self.evil_key.public_key(),
            origin_ts: now_ms(),
            nonce: rand::random(),
            body,
        }
    }

    fn signed(&self, envelope: &FedEnvelope, key: &ServerKey) -> Vec<u8> {
        let mut envelope = envelope.clone();
        envelope.signer = key.public_key();
        sign_envelope(key, &envelope)
    }

    /// `envelope` as it is (evil.test's key named as signer), signed by another key.
    fn forged(&self, envelope: &FedEnvelope) -> Vec<u8> {
        let encoded = envelope.encode();
        let signature = self
            .other_key
            .sign(&hearth_spec::federation::signing_message(&encoded));
        hearth_spec::federation::SignedEnvelope::join(&signature, &encoded)
    }

    fn submit(&self, event: Vec<u8>) -> Vec<u8> {
        self.signed(&self.envelope(FedBody::Submit { event }), &self.evil_key)
    }

    async fn send(&self, frame: Vec<u8>) -> Outcome {
        let outcomes = self.evil.send(&self.home, &[frame]).await.unwrap();
        assert_eq!(outcomes.len(), 1);
        outcomes[0]
    }

    async fn expect(&self, case: &str, frame: Vec<u8>, code: RejectCode) {
        let before = self.last_seq().await;
        assert_eq!(self.send(frame).await, Outcome::Rejected(code), "{case}");
        assert_eq!(self.last_seq().await, before, "{case}: nothing stored");
    }

    /// Sends raw bytes as one stream and returns the hearth's answer.
    async fn raw_stream(&self, bytes: &[u8]) -> StreamReply {
        let connection = self.evil.connection(&self.home).await.unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), recv.read_to_end(1 << 20))
            .await
            .unwrap()
            .unwrap();
        StreamReply::decode(&answer).unwrap()
    }

    async fn last_seq(&self) -> u64 {
        let mut alice = hearth_client::Client::with_session(
            &self.hearth.url,
            self.alice.session().unwrap().clone(),
        );
        alice.room(&self.room).await.unwrap().last_seq
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_envelopes_are_refused_with_typed_codes_and_nothing_is_stored() {
    let w = World::new().await;
    let room = w.room.clone();
    let mallory = "@mallory:evil.test";

    // The baseline: a well-formed message from a member on evil.test is sequenced.
    let start = w.last_seq().await;
    let good_event = w.message(&room, mallory);
    let good = w.submit(good_event.clone());
    assert_eq!(w.send(good.clone()).await, Outcome::Stored);
    assert_eq!(w.last_seq().await, start + 1);

    // 1. A flipped bit in the signature.
    let mut bad = w.submit(w.message(&room, mallory));
    bad[3] ^= 0x40;
    w.expect("bad signature", bad, RejectCode::BadSignature)
        .await;
    // 2. A flipped bit in the signed bytes.
    let mut bad = w.submit(w.message(&room, mallory));
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    w.expect("tampered body", bad, RejectCode::BadSignature)
        .await;
    // 3. Signed by a key nobody knows.
    let stranger = ServerKey::generate();
    let env = w.envelope(FedBody::Submit {
        event: w.message(&room, mallory),
    });
    w.expect(
        "unknown key",
        w.signed(&env, &stranger),
        RejectCode::UnknownKey,
    )
    .await;
    // 4. Signed by another hearth's key in evil's name.
    w.expect(
        "another hearth's key",
        w.signed(&env, &w.other_key),
        RejectCode::UnknownKey,
    )
    .await;
    // 5. Signed by a revoked key.
    w.expect(
        "revoked key",
        w.signed(&env, &w.revoked_key),
        RejectCode::RevokedKey,
    )
    .await;
    // 6. Signed by a rotated-away key after its grace period.
    w.expect(
        "expired previous key",
        w.signed(&env, &w.expired_key),
        RejectCode::RevokedKey,
    )
    .await;
    // 7. An origin the hearth has never heard of.
    let mut unknown = env.clone();
    unknown.origin = name("nobody.test");
    w.expect(
        "unknown origin",
        w.signed(&unknown, &w.evil_key),
        RejectCode::UnknownOrigin,
    )
    .await;
    // 8. A valid envelope of other.test, relayed over evil's authenticated connection.
    let mut other = env.clone();
    other.origin = name("other.test");
    other.body = FedBody::Submit {
        event: w.message(&room, "@olga:other.test"),
    };
    w.expect(
        "origin is not the connected peer",
        w.signed(&other, &w.other_key),
        RejectCode::OriginMismatch,
    )
    .await;
    // 9. evil.test speaking for a user of other.test.
    w.expect(
        "origin claims another hearth's user",
        w.submit(w.message(&room, "@olga:other.test")),
        RejectCode::ForeignSender,
    )
    .await;
    // 10. A sender who is not in the room.
    w.expect(
        "sender not in the room",
        w.submit(w.message(&w.closed_room, mallory)),
        RejectCode::NotMember,
    )
    .await;
    // 11. Addressed to another hearth.
    let mut elsewhere = w.envelope(FedBody::Submit {
        event: w.message(&room, mallory),
    });
    elsewhere.destination = name("elsewhere.test");
    w.expect(
        "wrong destination",
        w.signed(&elsewhere, &w.evil_key),
        RejectCode::WrongDestination,
    )
    .await;
    // 12. Signed eleven minutes ago.
    let mut stale = w.envelope(FedBody::Submit {
        event: w.message(&room, mallory),
    });
    stale.origin_ts = now_ms() - 11 * 60 * 1000;
    w.expect("stale", w.signed(&stale, &w.evil_key), RejectCode::Stale)
        .await;
    // 13. Signed five minutes in the future.
    let mut ahead = stale.clone();
    ahead.origin_ts = now_ms() + 5 * 60 * 1000;
    w.expect(
        "from the future",
        w.signed(&ahead, &w.evil_key),
        RejectCode::FromTheFuture,
    )
    .await;
    // 14. The baseline envelope again, byte for byte.
    w.expect("replay", good.clone(), RejectCode::Replayed).await;
    // 15. The baseline event in an old envelope: past the replay window it is simply stale.
    let mut old = w.envelope(FedBody::Submit {
        event: good_event.clone(),
    });
    old.origin_ts = now_ms() - 60 * 60 * 1000;
    w.expect(
        "replay after the de-duplication window",
        w.signed(&old, &w.evil_key),
        RejectCode::Stale,
    )
    .await;
    // 16. The baseline event in a fresh envelope: a duplicate, stored once.
    let before = w.last_seq().await;
    assert_eq!(
        w.send(w.submit(good_event.clone())).await,
        Outcome::Duplicate
    );
    assert_eq!(w.last_seq().await, before);
    // 17. A version this hearth does not speak.
    let mut v2 = w.envelope(FedBody::Submit {
        event: w.message(&room, mallory),
    });
    v2.version = 2;
    w.expect(
        "unsupported version",
        w.signed(&v2, &w.evil_key),
        RejectCode::UnsupportedVersion,
    )
    .await;
    // 18. Random bytes.
    let garbage: Vec<u8> = (0..200).map(|_| rand::random::<u8>()).collect();
    w.expect("garbage", garbage, RejectCode::Malformed).await;
    // 19. Shorter than a signature.
    w.expect("truncated envelope", vec![7; 40], RejectCode::Malformed)
        .await;
    // 20. Bytes after a valid envelope inside the frame.
    let mut trailing = w.submit(w.message(&room, mallory));
    trailing.extend_from_slice(b"tail");
    w.expect(
        "trailing bytes in the frame",
        trailing,
        RejectCode::Malformed,
    )
    .await;
    // 21. A non-canonical encoding (a varint padded with a redundant byte), signed as sent.
    let env = w.envelope(FedBody::Submit {
        event: w.message(&room, mallory),
    });
    let encoded = env.encode();
    let ts = postcard_varint(env.origin_ts);
    let at = encoded
        .windows(ts.len())
        .position(|w| w == ts.as_slice())
        .unwrap();
    let mut long_ts = ts.clone();
    *long_ts.last_mut().unwrap() |= 0x80;
    long_ts.push(0);
    let mut padded = encoded[..at].to_vec();
    padded.extend_from_slice(&long_ts);
    padded.extend_from_slice(&encoded[at + ts.len()..]);
    let sig = w
        .evil_key
        .sign(&hearth_spec::federation::signing_message(&padded));
    w.expect(
        "non-canonical encoding",
        SignedEnvelope::join(&sig, &padded),
        RejectCode::Malformed,
    )
    .await;
    // 22. A submit whose event is not an event.
    w.expect(
        "inner event garbage",
        w.submit(b"not an envelope".to_vec()),
        RejectCode::BadEvent,
    )
    .await;
    // 23. A submit for a room homed on evil.test itself.
    let foreign_room = RoomId::parse("!theirs:evil.test").unwrap();
    w.expect(
        "submit to a hearth that is not the room's home",
        w.submit(w.message(&foreign_room, mallory)),
        RejectCode::NotHome,
    )
    .await;
    // 24. evil.test posing as the home of a room homed here.
    let forged_seq = w.signed(
        &w.envelope(FedBody::Sequenced {
            seq: 99,
            event: w.message(&room, mallory),
        }),
        &w.evil_key,
    );
    w.expect(
        "sequenced event from a hearth that is not the home",
        forged_seq,
        RejectCode::NotHome,
    )
    .await;
    // 25. A member hearth trying to create a room event.
    w.expect(
        "create from a member",
        w.submit(w.event(
            &room,
            mallory,
            Content::Create {
                kind: RoomKind::Group,
                name: None,
            },
        )),
        RejectCode::BadEvent,
    )
    .await;
    // 26. Removing somebody else without being the group's admin (its creator, alice).
    w.expect(
        "kick by a member who is not the admin",
        w.submit(w.event(
            &room,
            mallory,
            Content::Member {
                target: UserId::parse("@alice:home.test").unwrap(),
                membership: Membership::Leave,
            },
        )),
        RejectCode::Forbidden,
    )
    .await;
    // 27. Inviting into a direct chat.
    let before_dm = w.last_seq().await;
    assert_eq!(
        w.send(w.submit(w.event(
            &w.dm,
            mallory,
            Content::Member {
                target: UserId::parse("@eve:evil.test").unwrap(),
                membership: Membership::Join,
            },
        )))
        .await,
        Outcome::Rejected(RejectCode::Forbidden),
        "invite into a direct chat"
    );
    assert_eq!(w.last_seq().await, before_dm);
    // 28. A room that does not exist.
    w.expect(
        "unknown room",
        w.submit(w.message(&RoomId::parse("!nope:home.test").unwrap(), mallory)),
        RejectCode::UnknownRoom,
    )
    .await;
    // 29. A payload over the hearth's event limit (1 KiB here).
    w.expect(
        "oversized payload",
        w.submit(w.event(
            &room,
            mallory,
            Content::Message {
                payload: vec![b'x'; 2048],
            },
        )),
        RejectCode::TooLarge,
    )
    .await;
    // 30. A batch mixing good and bad: each gets its own outcome; only the good one is stored.
    let before = w.last_seq().await;
    let mixed = vec![
        w.submit(w.message(&room, mallory)),
        w.submit(w.message(&room, "@olga:other.test")),
        w.submit(w.message(&room, mallory)),
    ];
    assert_eq!(
        w.evil.send(&w.home, &mixed).await.unwrap(),
        [
            Outcome::Stored,
            Outcome::Rejected(RejectCode::ForeignSender),
            Outcome::Stored
        ]
    );
    assert_eq!(w.last_seq().await, before + 2);

    // Streams whose framing is broken are refused whole, before any envelope is looked at.
    let before = w.last_seq().await;
    let mut oversized = Vec::new();
    push_frame(&mut oversized, &vec![0u8; MAX_SIGNED_ENVELOPE + 1]);
    assert_eq!(
        w.raw_stream(&oversized).await,
        StreamReply::Refused(StreamError::FrameTooLarge),
        "31. oversized frame"
    );
    let mut truncated = Vec::new();
    push_frame(&mut truncated, &w.submit(w.message(&room, mallory)));
    truncated.truncate(truncated.len() - 10);
    assert_eq!(
        w.raw_stream(&truncated).await,
        StreamReply::Refused(StreamError::Truncated),
        "32. truncated frame"
    );
    let mut tail = Vec::new();
    push_frame(&mut tail, &w.submit(w.message(&room, mallory)));
    tail.extend_from_slice(&[0xde, 0xad]);
    assert_eq!(
        w.raw_stream(&tail).await,
        StreamReply::Refused(StreamError::Truncated),
        "33. garbage after a valid frame"
    );
    let mut many = Vec::new();
    for _ in 0..=MAX_FRAMES_PER_STREAM {
        push_frame(&mut many, b"x");
    }
    assert_eq!(
        w.raw_stream(&many).await,
        StreamReply::Refused(StreamError::TooManyFrames),
        "34. too many frames"
    );
    assert_eq!(
        w.raw_stream(&[]).await,
        StreamReply::Refused(StreamError::Empty),
        "35. empty stream"
    );
    assert_eq!(
        w.last_seq().await,
        before,
        "no refused stream stored anything"
    );

    // 36. Too many streams: the hearth grants 8 at a time; the 9th cannot open until one ends.
    let connection = w.evil.connection(&w.home).await.unwrap();
    let mut held = Vec::new();
    for i in 0..8 {
        // Bounded: a stream of an earlier case still held would otherwise hang the test here.
        let (mut send, recv) = tokio::time::timeout(Duration::from_secs(30), connection.open_bi())
            .await
            .unwrap_or_else(|_| panic!("36. stream {i} of 8 cannot open: an earlier one is held"))
            .unwrap();
        // A stream is announced to the peer by its first bytes.
        send.write_all(&[0, 0]).await.unwrap();
        held.push((send, recv));
    }
    let ninth = tokio::time::timeout(Duration::from_millis(1500), connection.open_bi()).await;
    assert!(ninth.is_err(), "36. a ninth concurrent stream must wait");
    for (mut send, _) in held.drain(..1) {
        send.finish().unwrap();
    }
    drop(held);

    // 37. A stranger whose key no directory holds cannot even finish the TLS handshake.
    let stranger_dir = Arc::new(RwLock::new(Directory::new(
        vec![PeerConfig {
            name: w.home.clone(),
            address: w.hearth.running.federation_addr,
            key: hearth_node::ops::keys::load_or_generate(&hearth_node::ops::data_dir::key_path(
                &w.hearth.config.data_dir,
            ))
            .unwrap()
            .public_key(),
            previous_keys: vec![],
        }],
        vec![],
    )));
    let stranger_transport = Transport::start(
        TransportConfig::new(name("evil.test"), "127.0.0.1:0".parse().unwrap()),
        Arc::new(KeyRing::single(Arc::new(ServerKey::generate()))),
        stranger_dir,
        Arc::new(Sink),
    )
    .unwrap();
    let refused = stranger_transport
        .send(&w.home, &[w.submit(w.message(&room, mallory))])
        .await;
    assert!(refused.is_err(), "37. unknown TLS key: {refused:?}");

    // Finally: the room holds the baseline and the two good batch messages, and no refused
    // envelope's marker is anywhere in it.
    let mut alice =
        hearth_client::Client::with_session(&w.hearth.url, w.alice.session().unwrap().clone());
    let page = alice.history(&room, None, 500).await.unwrap();
    let evil_messages = page
        .events
        .iter()
        .filter(
            |e| matches!(&e.content, Content::Message { payload } if payload.starts_with(MARKER)),
        )
        .count();
    assert_eq!(evil_messages, 3);
}

/// Receipts, typing and presence from a peer: only about its own users, in rooms (or sharing
/// rooms) with them, at most 512 per envelope; one bad signal refuses the envelope and nothing in
/// it takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_signals_are_refused_and_none_takes_effect() {
    let w = World::new().await;
    let room = w.room.clone();
    let mallory = UserId::parse("@mallory:evil.test").unwrap();
    let olga = UserId::parse("@olga:other.test").unwrap();
    let eve = UserId::parse("@eve:evil.test").unwrap();
    let mut alice =
        hearth_client::Client::with_session(&w.hearth.url, w.alice.session().unwrap().clone());
    let alice_id = alice.user_id().unwrap().clone();
    let (_alice_tx, mut alice_rx) = hearth_tests::connect_synced(&mut alice).await;
    let signals =
        |signals: Vec<Signal>| w.signed(&w.envelope(FedBody::Ephemeral { signals }), &w.evil_key);
    let typing = |user: &UserId, room: &RoomId, typing: bool| Signal::Typing {
        room: room.clone(),
        user: user.clone(),
        typing,
    };
    let read = |user: &UserId, room: &RoomId, seq: u64| Signal::Receipt {
        room: room.clone(),
        user: user.clone(),
        kind: ReceiptKind::Read,
        seq,
    };

    // The baseline: mallory types and reads up to seq 1; alice sees both.
    let good = signals(vec![
        typing(&mallory, &room, true),
        read(&mallory, &room, 1),
    ]);
    assert_eq!(w.send(good.clone()).await, Outcome::Stored);
    let frames = hearth_tests::frames_until(&mut alice_rx, Duration::from_secs(10), |f| {
        matches!(f, ServerFrame::Receipt { user_id, seq: 1, kind: ReceiptKind::Read, .. } if *user_id == mallory)
    })
    .await
    .unwrap();
    assert!(frames.iter().any(
        |f| matches!(f, ServerFrame::Typing { user_id, typing: true, .. } if *user_id == mallory)
    ));
    assert_eq!(read_mark(&mut alice, &room, &mallory).await, 1);

    let cases: Vec<(&str, Vec<u8>, RejectCode)> = vec![
        (
            "s1. typing of another hearth's user",
            signals(vec![typing(&olga, &room, true)]),
            RejectCode::ForeignSender,
        ),
        (
            "s2. a receipt for a local user",
            signals(vec![read(&alice_id, &room, 2)]),
            RejectCode::ForeignSender,
        ),
        (
            "s3. typing of a user who is not in the room",
            signals(vec![typing(&eve, &room, true)]),
            RejectCode::NotMember,
        ),
        (
            "s4. a receipt in a room the user is not in",
            signals(vec![read(&mallory, &w.closed_room, 1)]),
            RejectCode::NotMember,
        ),
        (
            "s5. a receipt in a room that does not exist",
            signals(vec![read(
                &mallory,
                &RoomId::parse("!nope:home.test").unwrap(),
                1,
            )]),
            RejectCode::UnknownRoom,
        ),
        (
            "s6. presence of a user who shares no room here",
            signals(vec![Signal::Presence {
                user: eve.clone(),
                state: PresenceState::Online,
                last_seen_ms: Some(now_ms()),
            }]),
            RejectCode::NotMember,
        ),
        (
            "s7. more signals than an envelope may carry",
            signals(vec![typing(&mallory, &room, false); 513]),
            RejectCode::TooLarge,
        ),
        (
            "s8. a good receipt and a forged one together",
            signals(vec![read(&mallory, &room, 2), typing(&olga, &room, true)]),
            RejectCode::ForeignSender,
        ),
        ("s9. the good envelope replayed", good, RejectCode::Replayed),
    ];
    for (case, frame, code) in cases {
        assert_eq!(w.send(frame).await, Outcome::Rejected(code), "{case}");
    }
    assert_eq!(
        read_mark(&mut alice, &room, &mallory).await,
        1,
        "s8: nothing in a refused envelope takes effect"
    );
    // Nothing refused reached alice: the next frame she gets is mallory's real stop.
    assert_eq!(
        w.send(signals(vec![typing(&mallory, &room, false)])).await,
        Outcome::Stored
    );
    let frames = hearth_tests::frames_until(
        &mut alice_rx,
        Duration::from_secs(10),
        |f| matches!(f, ServerFrame::Typing { user_id, typing: false, .. } if *user_id == mallory),
    )
    .await
    .unwrap();
    assert_eq!(frames.len(), 1, "refused signals reached alice: {frames:?}");
    let view = alice.presence(&eve).await;
    assert!(view.is_err(), "eve shares no room with alice: {view:?}");
}

async fn read_mark(client: &mut hearth_client::Client, room: &RoomId, user: &UserId) -> u64 {
    let marks = client.receipts(room).await.unwrap();
    marks.iter().find(|m| m.user_id == *user).unwrap().read
}

/// A peer that sends faster than its budget gets `Retry(RateLimited)` for what is over it, and
/// nothing over it is stored; once the budget refills it is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_budget_is_told_to_retry_and_nothing_over_it_is_stored() {
    let w = World::with(|c| {
        c.federation.envelopes = hearth_node::config::Rate::new(5.0, 10.0);
    })
    .await;
    let room = w.room.clone();
    let before = w.last_seq().await;
    let frames: Vec<Vec<u8>> = (0..30)
        .map(|_| w.submit(w.message(&room, "@mallory:evil.test")))
        .collect();
    let sending = std::time::Instant::now();
    let outcomes = w.evil.send(&w.home, &frames).await.unwrap();
    // What refilled while the batch was checked: five a second.
    let refilled = (sending.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let stored = outcomes.iter().filter(|o| **o == Outcome::Stored).count();
    let limited = outcomes
        .iter()
        .filter(|o| **o == Outcome::Retry(RetryCode::RateLimited))
        .count();
    assert!(
        (10..=10 + refilled).contains(&stored) && stored + limited == 30,
        "a burst of 10 (plus {refilled} refilled meanwhile): {outcomes:?}"
    );
    assert!(
        outcomes[..stored].iter().all(|o| *o == Outcome::Stored),
        "the budget admits the first frames, in order: {outcomes:?}"
    );
    assert_eq!(w.last_seq().await, before + stored as u64);
    // Five a second: after a second and a half, five more are admitted (the sleep is the time
    // the budget needs; a slower machine only refills more, up to the burst).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frames: Vec<Vec<u8>> = (0..5)
        .map(|_| w.submit(w.message(&room, "@mallory:evil.test")))
        .collect();
    let outcomes = w.evil.send(&w.home, &frames).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Stored; 5]);
}

/// A peer acting as a relay: what it hands over opens only if sealed to this hearth and
/// unaltered, is checked as if its origin had sent it, is taken once however often it comes, and
/// what this hearth holds for others is stored sealed (no plaintext on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_envelopes_open_only_unaltered_and_held_ones_stay_sealed() {
    let w = World::new().await;
    let room = w.room.clone();
    let home_key = hearth_node::ops::keys::load_or_generate(&hearth_node::ops::data_dir::key_path(
        &w.hearth.config.data_dir,
    ))
    .unwrap()
    .public_key();
    // other.test's envelope for home.test, as other.test would sign it.
    let inner_for = |body: FedBody, key: &ServerKey| {
        let envelope = FedEnvelope {
            version: FED_VERSION,
            origin: name("other.test"),
            destination: w.home.clone(),
            signer: key.public_key(),
            origin_ts: now_ms(),
            nonce: rand::random(),
            body,
        };
        sign_envelope(key, &envelope)
    };
    let olga_message = || FedBody::Submit {
        event: w.message(&room, "@olga:other.test"),
    };
    let relayed = |sealed: SealedEnvelope| {
        w.signed(
            &w.envelope(FedBody::Relayed {
                origin: name("other.test"),
                sealed,
            }),
            &w.evil_key,
        )
    };
    let seal_for_home = |signed: &[u8]| hearth_crypto::seal(&home_key, &w.home, signed).unwrap();

    let before = w.last_seq().await;
    let sealed = seal_for_home(&inner_for(olga_message(), &w.other_key));
    assert_eq!(w.send(relayed(sealed.clone())).await, Outcome::Stored);
    assert_eq!(
        w.last_seq().await,
        before + 1,
        "the relayed message is sequenced"
    );
    assert_eq!(
        w.send(relayed(sealed.clone())).await,
        Outcome::Duplicate,
        "r1. the same seal handed over again (by another relay) is taken once"
    );
    let mut tampered = sealed.clone();
    tampered.ciphertext[10] ^= 0x01;
    w.expect(
        "r2. altered ciphertext",
        relayed(tampered),
        RejectCode::BadSeal,
    )
    .await;
    let mut swapped = sealed.clone();
    swapped.ephemeral = seal_for_home(b"x").ephemeral;
    w.expect(
        "r3. another ephemeral key",
        relayed(swapped),
        RejectCode::BadSeal,
    )
    .await;
    let for_evil = hearth_crypto::seal(
        &w.evil_key.public_key(),
        &w.home,
        &inner_for(olga_message(), &w.other_key),
    )
    .unwrap();
    w.expect(
        "r4. sealed to another hearth's key",
        relayed(for_evil),
        RejectCode::BadSeal,
    )
    .await;
    w.expect(
        "r5. the relay forging the origin's signature",
        relayed(seal_for_home(&inner_for(olga_message(), &w.evil_key))),
        RejectCode::UnknownKey,
    )
    .await;
    let nested = FedBody::Relayed {
        origin: name("other.test"),
        sealed: sealed.clone(),
    };
    w.expect(
        "r6. a relayed envelope inside a relayed envelope",
        relayed(seal_for_home(&inner_for(nested, &w.other_key))),
        RejectCode::BadEvent,
    )
    .await;
    w.expect(
        "r7. garbage inside a valid seal",
        relayed(seal_for_home(
            b"not an envelope at all, but sealed properly",
        )),
        RejectCode::Malformed,
    )
    .await;

    // Custody: home.test holds a sealed envelope from evil.test for other.test (unreachable),
    // and refuses to hold one for itself or for a hearth it does not know.
    let mut secret = MARKER.to_vec();
    secret.extend_from_slice(b" held for other.test");
    let held =
        hearth_crypto::seal(&w.other_key.public_key(), &name("other.test"), &secret).unwrap();
    let custody = |destination: &str| {
        w.signed(
            &w.envelope(FedBody::Custody {
                destination: name(destination),
                sealed: held.clone(),
            }),
            &w.evil_key,
        )
    };
    assert_eq!(w.send(custody("other.test")).await, Outcome::Stored);
    assert_eq!(
        w.send(custody("home.test")).await,
        Outcome::Rejected(RejectCode::CustodyRefused),
        "r8. custody for the relay itself"
    );
    assert_eq!(
        w.send(custody("nobody.test")).await,
        Outcome::Rejected(RejectCode::CustodyRefused),
        "r9. custody for an unknown hearth"
    );
    assert_eq!(w.last_seq().await, before + 1, "nothing refused was stored");
    // What is held is on disk only sealed: the plaintext marker is nowhere in the data directory.
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&w.hearth.config.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file()
            && std::fs::read(&path)
                .unwrap()
                .windows(secret.len())
                .any(|window| window == secret.as_slice())
        {
            found.push(path);
        }
    }
    assert!(
        found.is_empty(),
        "plaintext of a held envelope in {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_package_claims_from_a_peer_are_checked_and_hand_out_each_package_once() {
    let mut w = World::new().await;
    let alice = w.alice.user_id().unwrap().clone();
    let packages: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 40]).collect();
    w.alice
        .upload_key_packages(&hearth_spec::api::UploadKeyPackages {
            key_packages: packages.clone(),
            last_resort: Some(vec![9; 40]),
        })
        .await
        .unwrap();
    let claim = |user: &UserId| FedBody::ClaimKeyPackages {
        user: user.clone(),
        devices: None,
    };
    // A claim travels alone and is answered with the packages: three once each, then the
    // last-resort one.
    let mut handed = Vec::new();
    for _ in 0..5 {
        let frame = w.signed(&w.envelope(claim(&alice)), &w.evil_key);
        let got = w.evil.claim(&w.home, frame).await.unwrap();
        assert_eq!(got.len(), 1);
        handed.push((got[0].key_package.clone(), got[0].last_resort));
    }
    let one_time: Vec<_> = handed
        .iter()
        .filter(|(_, lr)| !lr)
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(one_time, packages);
    assert_eq!(handed[3], (vec![9; 40], true));
    // Signed by a key that is not evil.test's, then forged: evil.test's key named, another's
    // signature.
    let stranger = w.signed(&w.envelope(claim(&alice)), &w.other_key);
    assert!(matches!(
        w.evil.claim(&w.home, stranger).await,
        Err(hearth_federation::RequestError::Rejected(
            RejectCode::UnknownKey
        ))
    ));
    let forged = w.forged(&w.envelope(claim(&alice)));
    assert!(matches!(
        w.evil.claim(&w.home, forged).await,
        Err(hearth_federation::RequestError::Rejected(
            RejectCode::BadSignature
        ))
    ));
    // Replayed: the exact envelope again.
    let once = w.signed(&w.envelope(claim(&alice)), &w.evil_key);
    w.evil.claim(&w.home, once.clone()).await.unwrap();
    assert!(matches!(
        w.evil.claim(&w.home, once).await,
        Err(hearth_federation::RequestError::Rejected(
            RejectCode::Replayed
        ))
    ));
    // A user this hearth does not serve, or does not have.
    for user in ["@bob:evil.test", "@nobody:localhost"] {
        let frame = w.signed(
            &w.envelope(claim(&UserId::parse(user).unwrap())),
            &w.evil_key,
        );
        assert!(matches!(
            w.evil.claim(&w.home, frame).await,
            Err(hearth_federation::RequestError::Rejected(
                RejectCode::WrongDestination
            ))
        ));
    }
    // Inside a batch with other envelopes it is refused and claims nothing.
    let before = w.alice.key_package_count().await.unwrap();
    let batch = [
        w.signed(&w.envelope(claim(&alice)), &w.evil_key),
        w.signed(&w.envelope(claim(&alice)), &w.evil_key),
    ];
    let outcomes = w.evil.send(&w.home, &batch).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Rejected(RejectCode::BadEvent); 2]);
    assert_eq!(w.alice.key_package_count().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_fetches_from_a_peer_are_checked_both_ways() {
    use hearth_spec::federation::MAX_MEDIA_CHUNK;
    let mut w = World::new().await;
    let chunk = MAX_MEDIA_CHUNK as usize;
    let blob: Vec<u8> = (0..chunk + 1000).map(|i| (i % 251) as u8).collect();
    let uploaded = w.alice.upload_media(blob.clone()).await.unwrap();
    let id: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&uploaded.media_id[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    let fetch = |media_id, offset, len| FedBody::FetchMedia {
        media_id,
        offset,
        len,
    };
    // The blob in parts: its length with each, the last part short, nothing past the end.
    let mut parts = Vec::new();
    for offset in [0, chunk as u64, blob.len() as u64, u64::MAX] {
        let frame = w.signed(&w.envelope(fetch(id, offset, MAX_MEDIA_CHUNK)), &w.evil_key);
        parts.push(w.evil.fetch_media(&w.home, frame).await.unwrap());
    }
    assert!(parts.iter().all(|(total, _)| *total == blob.len() as u64));
    assert_eq!(parts[0].1, blob[..chunk]);
    assert_eq!(parts[1].1, blob[chunk..]);
    assert!(parts[2].1.is_empty() && parts[3].1.is_empty());
    let refused = |result: Result<(u64, Vec<u8>), hearth_federation::RequestError>| match result {
        Err(hearth_federation::RequestError::Rejected(code)) => code,
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|(t, b)| (t, b.len()))
        ),
    };
    // More than one part's worth at once.
    let frame = w.signed(&w.envelope(fetch(id, 0, MAX_MEDIA_CHUNK + 1)), &w.evil_key);
    assert_eq!(
        refused(w.evil.fetch_media(&w.home, frame).await),
        RejectCode::TooLarge
    );
    // A blob the hearth does not hold.
    let frame = w.signed(&w.envelope(fetch([7; 32], 0, 16)), &w.evil_key);
    assert_eq!(
        refused(w.evil.fetch_media(&w.home, frame).await),
        RejectCode::UnknownMedia
    );
    // By a stranger's key, forged, then replayed.
    let stranger = w.signed(&w.envelope(fetch(id, 0, 16)), &w.other_key);
    assert_eq!(
        refused(w.evil.fetch_media(&w.home, stranger).await),
        RejectCode::UnknownKey
    );
    let forged = w.forged(&w.envelope(fetch(id, 0, 16)));
    assert_eq!(
        refused(w.evil.fetch_media(&w.home, forged).await),
        RejectCode::BadSignature
    );
    let once = w.signed(&w.envelope(fetch(id, 0, 16)), &w.evil_key);
    w.evil.fetch_media(&w.home, once.clone()).await.unwrap();
    assert_eq!(
        refused(w.evil.fetch_media(&w.home, once).await),
        RejectCode::Replayed
    );
    // Inside a batch it is refused.
    let batch = [
        w.signed(&w.envelope(fetch(id, 0, 16)), &w.evil_key),
        w.signed(&w.envelope(fetch(id, 0, 16)), &w.evil_key),
    ];
    let outcomes = w.evil.send(&w.home, &batch).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Rejected(RejectCode::BadEvent); 2]);

    // The other way: alice's hearth fetches from evil.test, which lies. Bytes that do not hash
    // to the id and a blob over the limit are refused, and nothing is kept.
    let media_dir = w.hearth.config.data_dir.join("media");
    let stored_before = std::fs::read_dir(&media_dir).unwrap().count();
    let evil = name("evil.test");
    let mut refusal = async |id: &str, server: &ServerName| {
        let err = w.alice.download_media(id, Some(server)).await.unwrap_err();
        err.code().unwrap_or_else(|| panic!("untyped: {err}"))
    };
    use hearth_spec::ErrorCode;
    assert_eq!(
        refusal(&"ab".repeat(32), &evil).await,
        ErrorCode::Unavailable
    );
    assert_eq!(refusal(&"ff".repeat(32), &evil).await, ErrorCode::TooLarge);
    // A hearth this one does not federate with: not found (a retry would not help, so no 503).
    assert_eq!(
        refusal(&"ab".repeat(32), &name("nobody.test")).await,
        ErrorCode::NotFound
    );
    assert_eq!(
        std::fs::read_dir(&media_dir).unwrap().count(),
        stored_before,
        "a refused blob was kept"
    );
    assert_eq!(
        std::fs::read_dir(media_dir.join("partial"))
            .unwrap()
            .count(),
        0,
        "a refused blob left a partial file"
    );
    // A server name that is not one.
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/media/{}?server=not%20a%20name",
            w.hearth.url, uploaded.media_id
        ))
        .bearer_auth(&w.alice.session().unwrap().access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Its own blob, named with its own server, is served from its store.
    let home = name("home.test");
    assert_eq!(
        w.alice
            .download_media(&uploaded.media_id, Some(&home))
            .await
            .unwrap(),
        blob
    );
}

/// Codes the other tests do not reach: a member hearth's commit made in an epoch the room has
/// left, a room home's events out of order, and rotations to a key that is not the peer's to
/// take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_commits_events_out_of_order_and_rotations_to_keys_not_ours_get_their_codes() {
    let w = World::new().await;
    let mallory = "@mallory:evil.test";

    // A commit in the room's epoch is taken; another made in that same epoch lost the race.
    let commit = |epoch| {
        w.submit(w.event(
            &w.room,
            mallory,
            Content::Commit {
                epoch,
                commit: vec![1, 2, 3],
                welcome: None,
            },
        ))
    };
    // Making oneself an admin without being one.
    w.expect(
        "self-promotion by a member who is not an admin",
        w.submit(w.event(
            &w.room,
            mallory,
            Content::Admin {
                target: UserId::parse(mallory).unwrap(),
                admin: true,
            },
        )),
        RejectCode::Forbidden,
    )
    .await;
    assert_eq!(w.send(commit(0)).await, Outcome::Stored);
    w.expect(
        "a commit in an epoch the room has left",
        commit(0),
        RejectCode::StaleEpoch,
    )
    .await;

    // A room homed on evil.test with alice in it: its events are taken in order only.
    let far_room = RoomId::parse("!far:evil.test").unwrap();
    let sequenced =
        |seq, event| w.signed(&w.envelope(FedBody::Sequenced { seq, event }), &w.evil_key);
    let create = w.event(
        &far_room,
        mallory,
        Content::Create {
            kind: RoomKind::Group,
            name: Some("far".into()),
        },
    );
    let join = w.event(
        &far_room,
        mallory,
        Content::Member {
            target: UserId::parse("@alice:home.test").unwrap(),
            membership: Membership::Join,
        },
    );
    let hello = w.message(&far_room, mallory);
    assert_eq!(w.send(sequenced(1, create)).await, Outcome::Stored);
    assert_eq!(
        w.send(sequenced(3, hello.clone())).await,
        Outcome::Retry(RetryCode::OutOfOrder),
        "3 before 2"
    );
    assert_eq!(w.send(sequenced(2, join.clone())).await, Outcome::Stored);
    assert_eq!(w.send(sequenced(3, hello)).await, Outcome::Stored);
    assert_eq!(w.send(sequenced(2, join)).await, Outcome::Duplicate);
    let mut alice =
        hearth_client::Client::with_session(&w.hearth.url, w.alice.session().unwrap().clone());
    assert_eq!(alice.room(&far_room).await.unwrap().last_seq, 3);

    // Rotations to a revoked key, or to a key another hearth holds, are refused, and evil.test's
    // own key goes on working.
    let rotation = |new_key: hearth_spec::PublicKey| {
        w.signed(
            &w.envelope(FedBody::KeyRotation {
                new_key,
                old_valid_until_ms: now_ms() + 60_000,
            }),
            &w.evil_key,
        )
    };
    w.expect(
        "rotation to a revoked key",
        rotation(w.revoked_key.public_key()),
        RejectCode::Forbidden,
    )
    .await;
    w.expect(
        "rotation to other.test's key",
        rotation(w.other_key.public_key()),
        RejectCode::Forbidden,
    )
    .await;
    assert_eq!(
        w.send(w.submit(w.message(&w.room, mallory))).await,
        Outcome::Stored
    );
    assert_eq!(
        w.send(w.signed(
            &w.envelope(FedBody::Submit {
                event: w.message(&w.room, mallory)
            }),
            &w.other_key
        ))
        .await,
        Outcome::Rejected(RejectCode::UnknownKey),
        "other.test's key did not become evil.test's"
    );
}
