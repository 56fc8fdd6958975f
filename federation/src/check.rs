//! The checks every incoming envelope passes before anything looks at its body: framing,
//! encoding, origin key, signature, sender, destination, freshness and replay. No I/O.

use std::collections::{HashSet, VecDeque};

use hearth_spec::ServerName;
use hearth_spec::federation::{FedDecodeError, FedEnvelope, RejectCode, SignedEnvelope};

use crate::directory::Directory;

/// How old or how far ahead an envelope's signing time may be.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub max_age_ms: u64,
    pub max_skew_ms: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            max_age_ms: 10 * 60 * 1000,
            max_skew_ms: 60 * 1000,
        }
    }
}

/// The signatures of recently accepted envelopes, so an exact replay inside the freshness
/// window is refused. Bounded: past `capacity` the oldest are forgotten, and a replay of one of
/// those still stores nothing, because every body is idempotent (event id / room place).
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    order: VecDeque<(u64, [u8; 16])>,
    seen: HashSet<[u8; 16]>,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Records `id` seen at `ts_ms`; false if it was already there.
    fn insert(&mut self, id: [u8; 16], ts_ms: u64, oldest_ms: u64) -> bool {
        if self.seen.contains(&id) {
            return false;
        }
        while let Some((ts, old)) = self.order.front().copied() {
            if ts >= oldest_ms && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        self.seen.insert(id);
        self.order.push_back((ts_ms, id));
        true
    }
}

/// Checks a batch of signed envelopes, in the order the spec gives: encoding, origin key,
/// signature (verified as one ed25519 batch), sender, destination, freshness, replay.
pub fn check_batch(
    directory: &Directory,
    replay: &mut ReplayCache,
    freshness: Freshness,
    own: &ServerName,
    peer: &ServerName,
    frames: &[&[u8]],
    now_ms: u64,
) -> Vec<Result<FedEnvelope, RejectCode>> {
    let mut verdicts: Vec<Result<FedEnvelope, RejectCode>> = Vec::with_capacity(frames.len());
    let mut to_verify = Vec::new();
    let mut places = Vec::new();
    for wire in frames {
        let parsed = SignedEnvelope::split(wire)
            .map_err(decode_reject)
            .and_then(|signed| {
                let envelope = FedEnvelope::decode(signed.encoded).map_err(decode_reject)?;
                let key = directory.check_signer(&envelope.origin, &envelope.signer, now_ms)?;
                Ok((envelope, key, signed))
            });
        match parsed {
            Ok((envelope, key, signed)) => {
                places.push(verdicts.len());
                to_verify.push((key, signed));
                verdicts.push(Ok(envelope));
            }
            Err(code) => verdicts.push(Err(code)),
        }
    }
    let signatures_ok = hearth_crypto::verify_envelopes(&to_verify);
    for ((place, ok), (_, signed)) in places.into_iter().zip(signatures_ok).zip(&to_verify) {
        let verdict = &mut verdicts[place];
        let Ok(envelope) = verdict else { continue };
        let result = if ok {
            after_signature(
                replay,
                freshness,
                own,
                peer,
                envelope,
                signed.signature,
                now_ms,
            )
        } else {
            Err(RejectCode::BadSignature)
        };
        if let Err(code) = result {
            *verdict = Err(code);
        }
    }
    verdicts
}

/// The checks that follow a good signature.
fn after_signature(
    replay: &mut ReplayCache,
    freshness: Freshness,
    own: &ServerName,
    peer: &ServerName,
    envelope: &FedEnvelope,
    signature: &[u8; 64],
    now_ms: u64,
) -> Result<(), RejectCode> {
    if envelope.origin != *peer {
        return Err(RejectCode::OriginMismatch);
    }
    if envelope.destination != *own {
        return Err(RejectCode::WrongDestination);
    }
    if envelope.origin_ts.saturating_add(freshness.max_age_ms) < now_ms {
        return Err(RejectCode::Stale);
    }
    if envelope.origin_ts > now_ms.saturating_add(freshness.max_skew_ms) {
        return Err(RejectCode::FromTheFuture);
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&signature[..16]);
    let oldest = now_ms.saturating_sub(freshness.max_age_ms + freshness.max_skew_ms);
    if !replay.insert(id, envelope.origin_ts.max(oldest), oldest) {
        return Err(RejectCode::Replayed);
    }
    Ok(())
}

fn decode_reject(e: FedDecodeError) -> RejectCode {
    match e {
        FedDecodeError::UnsupportedVersion(_) => RejectCode::UnsupportedVersion,
        FedDecodeError::TooLarge(_) => RejectCode::TooLarge,
        _ => RejectCode::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::PeerConfig;
    use hearth_crypto::{ServerKey, sign_envelope};
    use hearth_spec::federation::{FED_VERSION, FedBody};

    struct Fixture {
        key: ServerKey,
        directory: Directory,
        own: ServerName,
        peer: ServerName,
    }

    fn fixture() -> Fixture {
        let key = ServerKey::generate();
        let peer = ServerName::parse("b.example").unwrap();
        let directory = Directory::new(
            vec![PeerConfig {
                name: peer.clone(),
                address: "127.0.0.1:9".parse().unwrap(),
                key: key.public_key(),
                previous_keys: vec![],
            }],
            vec![],
        );
        Fixture {
            key,
            directory,
            own: ServerName::parse("a.example").unwrap(),
            peer,
        }
    }

    fn envelope(f: &Fixture, ts: u64) -> FedEnvelope {
        FedEnvelope {
            version: FED_VERSION,
            origin: f.peer.clone(),
            destination: f.own.clone(),
            signer: f.key.public_key(),
            origin_ts: ts,
            nonce: rand::random(),
            body: FedBody::Submit { event: vec![] },
        }
    }

    fn check(
        f: &Fixture,
        cache: &mut ReplayCache,
        wire: &[u8],
        now: u64,
    ) -> Result<(), RejectCode> {
        check_batch(
            &f.directory,
            cache,
            Freshness::default(),
            &f.own,
            &f.peer,
            &[wire],
            now,
        )
        .pop()
        .expect("one frame, one verdict")
        .map(|_| ())
    }

    #[test]
    fn fresh_signed_envelope_passes_once() {
        let f = fixture();
        let mut cache = ReplayCache::new(100);
        let wire = sign_envelope(&f.key, &envelope(&f, 1_000_000));
        assert_eq!(check(&f, &mut cache, &wire, 1_000_000), Ok(()));
        assert_eq!(
            check(&f, &mut cache, &wire, 1_000_001),
            Err(RejectCode::Replayed)
        );
    }

    #[test]
    fn stale_and_future_envelopes_are_refused() {
        let f = fixture();
        let mut cache = ReplayCache::new(100);
        let now = 100_000_000;
        let old = sign_envelope(&f.key, &envelope(&f, now - 11 * 60 * 1000));
        assert_eq!(check(&f, &mut cache, &old, now), Err(RejectCode::Stale));
        let ahead = sign_envelope(&f.key, &envelope(&f, now + 2 * 60 * 1000));
        assert_eq!(
            check(&f, &mut cache, &ahead, now),
            Err(RejectCode::FromTheFuture)
        );
    }

    #[test]
    fn replay_cache_forgets_the_oldest_past_capacity() {
        let mut cache = ReplayCache::new(2);
        assert!(cache.insert([1; 16], 10, 0));
        assert!(cache.insert([2; 16], 11, 0));
        assert!(cache.insert([3; 16], 12, 0));
        assert!(cache.insert([1; 16], 13, 0));
        assert!(!cache.insert([3; 16], 14, 0));
    }

    #[test]
    fn freshness_bounds_are_inclusive() {
        let f = fixture();
        let mut cache = ReplayCache::new(100);
        let now = 100_000_000;
        let limits = Freshness::default();
        let at = |ts| sign_envelope(&f.key, &envelope(&f, ts));
        assert_eq!(
            check(&f, &mut cache, &at(now - limits.max_age_ms), now),
            Ok(())
        );
        assert_eq!(
            check(&f, &mut cache, &at(now - limits.max_age_ms - 1), now),
            Err(RejectCode::Stale)
        );
        assert_eq!(
            check(&f, &mut cache, &at(now + limits.max_skew_ms), now),
            Ok(())
        );
        assert_eq!(
            check(&f, &mut cache, &at(now + limits.max_skew_ms + 1), now),
            Err(RejectCode::FromTheFuture)
        );
    }

    #[test]
    fn a_replay_is_refused_for_as_long_as_the_envelope_is_fresh() {
        let f = fixture();
        let mut cache = ReplayCache::new(100);
        let limits = Freshness::default();
        let start = 100_000_000;
        let first = sign_envelope(&f.key, &envelope(&f, start));
        assert_eq!(check(&f, &mut cache, &first, start), Ok(()));
        // At the last moment `first` is fresh, after other envelopes made the cache forget what
        // is out of the window, it is still a replay.
        let last = start + limits.max_age_ms;
        let other = sign_envelope(&f.key, &envelope(&f, last));
        assert_eq!(check(&f, &mut cache, &other, last), Ok(()));
        assert_eq!(
            check(&f, &mut cache, &first, last),
            Err(RejectCode::Replayed)
        );
        // A moment later it is stale, whether or not the cache still has it.
        assert_eq!(
            check(&f, &mut cache, &first, last + 1),
            Err(RejectCode::Stale)
        );
    }

    #[test]
    fn framing_errors_get_their_own_codes() {
        let f = fixture();
        let mut cache = ReplayCache::new(100);
        let now = 100_000_000;
        let mut newer = envelope(&f, now);
        newer.version = FED_VERSION + 1;
        let newer = sign_envelope(&f.key, &newer);
        assert_eq!(
            check(&f, &mut cache, &newer, now),
            Err(RejectCode::UnsupportedVersion)
        );
        let huge = vec![0u8; hearth_spec::federation::MAX_SIGNED_ENVELOPE + 1];
        assert_eq!(check(&f, &mut cache, &huge, now), Err(RejectCode::TooLarge));
        assert_eq!(
            check(&f, &mut cache, &[1, 2, 3], now),
            Err(RejectCode::Malformed)
        );
    }

    /// Every check an incoming envelope passes, as one table sent in one batch: each hostile
    /// frame gets its own code, in its own place, and the good ones among them still pass
    /// (the batch signature check falls back to one-by-one without mixing verdicts up).
    #[test]
    fn every_check_has_its_code_and_a_hostile_frame_spoils_only_itself() {
        use hearth_spec::PublicKey;
        use hearth_spec::federation::{MAX_SIGNED_ENVELOPE, signing_message};

        let now = 100_000_000;
        let current = ServerKey::generate();
        let in_grace = ServerKey::generate();
        let past_grace = ServerKey::generate();
        let revoked = ServerKey::generate();
        let other_peer = ServerKey::generate();
        let stranger = ServerKey::generate();
        let (own, peer, third) = (
            ServerName::parse("a.example").unwrap(),
            ServerName::parse("b.example").unwrap(),
            ServerName::parse("c.example").unwrap(),
        );
        let directory = Directory::new(
            vec![
                PeerConfig {
                    name: peer.clone(),
                    address: "127.0.0.1:9".parse().unwrap(),
                    key: current.public_key(),
                    previous_keys: vec![
                        (in_grace.public_key(), now + 1_000),
                        (past_grace.public_key(), now - 1),
                        (revoked.public_key(), now + 1_000),
                    ],
                },
                PeerConfig {
                    name: third.clone(),
                    address: "127.0.0.1:10".parse().unwrap(),
                    key: other_peer.public_key(),
                    previous_keys: vec![],
                },
            ],
            vec![revoked.public_key()],
        );
        let base = |signer: &ServerKey| FedEnvelope {
            version: FED_VERSION,
            origin: peer.clone(),
            destination: own.clone(),
            signer: signer.public_key(),
            origin_ts: now,
            nonce: rand::random(),
            body: FedBody::Submit { event: vec![1] },
        };
        let signed = |key: &ServerKey, tweak: &dyn Fn(&mut FedEnvelope)| {
            let mut e = base(key);
            tweak(&mut e);
            sign_envelope(key, &e)
        };
        // Signed by `by`, claiming to be signed by `claims`.
        let signed_as = |by: &ServerKey, claims: PublicKey| {
            let mut e = base(by);
            e.signer = claims;
            let encoded = e.encode();
            SignedEnvelope::join(&by.sign(&signing_message(&encoded)), &encoded)
        };
        let good = signed(&current, &|_| {});
        let mut bad_signature = signed(&current, &|_| {});
        bad_signature[0] ^= 1;
        let mut altered_body = signed(&current, &|_| {});
        let last = altered_body.len() - 1;
        altered_body[last] ^= 1;

        let table: Vec<(&str, Vec<u8>, Result<(), RejectCode>)> = vec![
            ("good", good.clone(), Ok(())),
            (
                "previous key in its grace",
                signed(&in_grace, &|_| {}),
                Ok(()),
            ),
            (
                "unknown origin",
                signed(&current, &|e| {
                    e.origin = ServerName::parse("z.example").unwrap()
                }),
                Err(RejectCode::UnknownOrigin),
            ),
            (
                "a stranger's key",
                signed(&stranger, &|_| {}),
                Err(RejectCode::UnknownKey),
            ),
            (
                "another peer's key",
                signed(&other_peer, &|_| {}),
                Err(RejectCode::UnknownKey),
            ),
            (
                "revoked key",
                signed(&revoked, &|_| {}),
                Err(RejectCode::RevokedKey),
            ),
            (
                "previous key past its grace",
                signed(&past_grace, &|_| {}),
                Err(RejectCode::RevokedKey),
            ),
            (
                "signature altered",
                bad_signature,
                Err(RejectCode::BadSignature),
            ),
            (
                "body altered after signing",
                altered_body,
                Err(RejectCode::BadSignature),
            ),
            (
                "names the peer's key, signed by a stranger",
                signed_as(&stranger, current.public_key()),
                Err(RejectCode::BadSignature),
            ),
            (
                "for another hearth",
                signed(&current, &|e| e.destination = third.clone()),
                Err(RejectCode::WrongDestination),
            ),
            (
                "another hearth's envelope, forwarded by the peer",
                signed(&other_peer, &|e| e.origin = third.clone()),
                Err(RejectCode::OriginMismatch),
            ),
            (
                "stale",
                signed(&current, &|e| e.origin_ts = now - 11 * 60 * 1000),
                Err(RejectCode::Stale),
            ),
            (
                "from the future",
                signed(&current, &|e| e.origin_ts = now + 2 * 60 * 1000),
                Err(RejectCode::FromTheFuture),
            ),
            ("the good one again", good, Err(RejectCode::Replayed)),
            (
                "a newer version",
                signed(&current, &|e| e.version = FED_VERSION + 1),
                Err(RejectCode::UnsupportedVersion),
            ),
            (
                "too large",
                vec![0; MAX_SIGNED_ENVELOPE + 1],
                Err(RejectCode::TooLarge),
            ),
            ("garbage", vec![7; 80], Err(RejectCode::Malformed)),
            (
                "a good one after all that",
                signed(&current, &|_| {}),
                Ok(()),
            ),
        ];
        let frames: Vec<&[u8]> = table.iter().map(|(_, wire, _)| wire.as_slice()).collect();
        let verdicts = check_batch(
            &directory,
            &mut ReplayCache::new(100),
            Freshness::default(),
            &own,
            &peer,
            &frames,
            now,
        );
        assert_eq!(verdicts.len(), table.len());
        for ((case, _, expected), verdict) in table.iter().zip(verdicts) {
            assert_eq!(&verdict.map(|_| ()), expected, "{case}");
        }
    }
}
