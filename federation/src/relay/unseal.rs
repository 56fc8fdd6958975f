//! Opening what a relay hands over.

use hearth_spec::ServerName;
use hearth_spec::federation::{FedBody, FedEnvelope, Outcome, RejectCode, SealedEnvelope};

use crate::check::{Freshness, ReplayCache, check_batch};
use crate::{Directory, KeyRing};

/// The envelope inside a seal relayed for `origin`, checked at `now_ms` as if `origin` had sent
/// it directly (with `freshness` stretched to how long a relay may hold it). A seal none of
/// this hearth's valid keys opens is `BadSeal`; a relayed envelope may not carry another
/// custody or relay request.
pub fn unseal(
    own: &ServerName,
    keys: &KeyRing,
    directory: &Directory,
    freshness: Freshness,
    origin: &ServerName,
    sealed: &SealedEnvelope,
    now_ms: u64,
) -> Result<FedEnvelope, Outcome> {
    let bad_seal = Outcome::Rejected(RejectCode::BadSeal);
    let inner = keys
        .valid(now_ms)
        .iter()
        .find_map(|key| hearth_crypto::open(key, own, sealed).ok())
        .ok_or(bad_seal)?;
    // Relayed envelopes come in several copies (one per relay) and late; every body is
    // idempotent, so copies are told apart by the store, not by a replay memory.
    let mut replay = ReplayCache::new(1);
    let verdict = check_batch(
        directory,
        &mut replay,
        freshness,
        own,
        origin,
        &[inner.as_slice()],
        now_ms,
    )
    .pop();
    let envelope = verdict.ok_or(bad_seal)?.map_err(Outcome::Rejected)?;
    if matches!(
        envelope.body,
        FedBody::Custody { .. } | FedBody::Relayed { .. }
    ) {
        return Err(Outcome::Rejected(RejectCode::BadEvent));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hearth_crypto::{ServerKey, seal, sign_envelope};
    use hearth_spec::federation::FED_VERSION;

    use super::*;
    use crate::PeerConfig;

    const NOW: u64 = 1_000_000_000;

    struct Fixture {
        own: ServerName,
        own_key: Arc<ServerKey>,
        origin: ServerName,
        origin_key: ServerKey,
        directory: Directory,
    }

    fn fixture() -> Fixture {
        let origin_key = ServerKey::generate();
        let origin = ServerName::parse("origin.t").unwrap();
        let directory = Directory::new(
            vec![PeerConfig {
                name: origin.clone(),
                address: "127.0.0.1:9".parse().unwrap(),
                key: origin_key.public_key(),
                previous_keys: vec![],
            }],
            vec![],
        );
        Fixture {
            own: ServerName::parse("dest.t").unwrap(),
            own_key: Arc::new(ServerKey::generate()),
            origin,
            origin_key,
            directory,
        }
    }

    fn sealed(
        f: &Fixture,
        body: FedBody,
        signed_at: u64,
        to_key: &hearth_spec::PublicKey,
    ) -> SealedEnvelope {
        let envelope = FedEnvelope {
            version: FED_VERSION,
            origin: f.origin.clone(),
            destination: f.own.clone(),
            signer: f.origin_key.public_key(),
            origin_ts: signed_at,
            nonce: 7,
            body,
        };
        seal(to_key, &f.own, &sign_envelope(&f.origin_key, &envelope)).unwrap()
    }

    fn open(
        f: &Fixture,
        keys: &KeyRing,
        origin: &ServerName,
        sealed: &SealedEnvelope,
    ) -> Result<FedEnvelope, Outcome> {
        let freshness = Freshness {
            max_age_ms: 60_000,
            ..Freshness::default()
        };
        unseal(&f.own, keys, &f.directory, freshness, origin, sealed, NOW)
    }

    #[test]
    fn a_relayed_envelope_opens_once_and_then_again() {
        let f = fixture();
        let keys = KeyRing::single(f.own_key.clone());
        let submit = FedBody::Submit { event: vec![1, 2] };
        let s = sealed(&f, submit.clone(), NOW - 30_000, &f.own_key.public_key());
        assert_eq!(open(&f, &keys, &f.origin, &s).unwrap().body, submit);
        // Copies from several relays all open: the store de-duplicates, not a replay memory.
        assert_eq!(open(&f, &keys, &f.origin, &s).unwrap().body, submit);
    }

    #[test]
    fn refusals() {
        let f = fixture();
        let keys = KeyRing::single(f.own_key.clone());
        let own = f.own_key.public_key();
        let submit = FedBody::Submit { event: vec![] };
        let bad_seal = Err(Outcome::Rejected(RejectCode::BadSeal));
        // Sealed to another key.
        let other = ServerKey::generate().public_key();
        assert_eq!(
            open(
                &f,
                &keys,
                &f.origin,
                &sealed(&f, submit.clone(), NOW, &other)
            ),
            bad_seal
        );
        // A flipped ciphertext byte.
        let mut broken = sealed(&f, submit.clone(), NOW, &own);
        broken.ciphertext[0] ^= 1;
        assert_eq!(open(&f, &keys, &f.origin, &broken), bad_seal);
        // Held longer than the stretched window.
        assert_eq!(
            open(
                &f,
                &keys,
                &f.origin,
                &sealed(&f, submit.clone(), NOW - 61_000, &own)
            ),
            Err(Outcome::Rejected(RejectCode::Stale))
        );
        // Claimed for another origin than the one that signed it.
        let liar = ServerName::parse("liar.t").unwrap();
        assert!(matches!(
            open(&f, &keys, &liar, &sealed(&f, submit, NOW, &own)),
            Err(Outcome::Rejected(_))
        ));
        // A relayed envelope may not ask for custody or carry another relay.
        let nested = FedBody::Custody {
            destination: f.own.clone(),
            sealed: SealedEnvelope {
                ephemeral: [1; 32],
                ciphertext: vec![],
            },
        };
        assert_eq!(
            open(&f, &keys, &f.origin, &sealed(&f, nested, NOW, &own)),
            Err(Outcome::Rejected(RejectCode::BadEvent))
        );
    }

    #[test]
    fn a_seal_to_a_retired_key_opens_while_that_key_is_valid() {
        let f = fixture();
        let old = Arc::new(ServerKey::generate());
        let keys = KeyRing::new(f.own_key.clone(), vec![(old.clone(), NOW + 1)]);
        let s = sealed(
            &f,
            FedBody::Submit { event: vec![] },
            NOW,
            &old.public_key(),
        );
        assert!(open(&f, &keys, &f.origin, &s).is_ok());
        let expired = KeyRing::new(f.own_key.clone(), vec![(old, NOW - 1)]);
        assert_eq!(
            open(&f, &expired, &f.origin, &s),
            Err(Outcome::Rejected(RejectCode::BadSeal))
        );
    }
}
