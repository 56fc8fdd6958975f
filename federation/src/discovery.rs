//! Finding hearths nobody configured: look a name (or, for a connection from a stranger, a key)
//! up in the DHT, open the signed record, and learn it into the directory if policy allows and
//! the directory's pinning rules accept it.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hearth_spec::discovery::{HearthRecord, RECORD_VERSION, key_key, name_key};
use hearth_spec::{PublicKey, ServerName};

use crate::clock::now_ms;
use crate::directory::{Directory, LearnError, Learned};
use crate::keyring::KeyRing;
use crate::p2p::{Identity, Swarm};

/// Who may be learnt from the DHT.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryPolicy {
    /// If not empty, only these hearths are learnt.
    pub allow: Vec<ServerName>,
    /// Never learnt (configured peers are not affected: remove them from the configuration).
    pub block: Vec<ServerName>,
    /// How long a lookup may take.
    pub timeout: Duration,
}

impl DiscoveryPolicy {
    pub fn admits(&self, name: &ServerName) -> bool {
        !self.block.contains(name) && (self.allow.is_empty() || self.allow.contains(name))
    }
}

/// Why a hearth could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0} is not allowed by this hearth's discovery policy")]
    NotAllowed(ServerName),
    #[error("no acceptable record of {0} was found in the DHT")]
    NotFound(String),
    #[error("too many lookups of unknown callers at once")]
    Busy,
}

/// Lookups of unknown callers' keys running at once, at most: a stranger can make this hearth
/// look keys up by calling with fresh keys, so that work is bounded.
const STRANGER_LOOKUPS: usize = 8;

/// How long a key that was not found is not looked up again.
const MISS_MEMORY: Duration = Duration::from_secs(5);

/// How long a lookup keeps gathering answers after the first fitting one (other DHT nodes may
/// answer with another claim).
const SETTLE: Duration = Duration::from_millis(300);

/// Most keys remembered as not found (forgotten all at once beyond).
const MISSES_KEPT: usize = 4096;

/// Told of every hearth learnt from the DHT, with its signed record, so it can be kept.
pub type LearnHook = Arc<dyn Fn(&ServerName, &[u8], Learned) + Send + Sync>;

/// Resolves hearths through the DHT into the directory.
#[derive(Clone)]
pub struct Discovery {
    swarm: Swarm,
    directory: Arc<RwLock<Directory>>,
    own: ServerName,
    policy: Arc<DiscoveryPolicy>,
    learned: LearnHook,
    stranger_slots: Arc<tokio::sync::Semaphore>,
    misses: Arc<std::sync::Mutex<std::collections::HashMap<PublicKey, std::time::Instant>>>,
    gossip: Arc<GossipTally>,
}

/// Key announcements that came in by gossip: applied, or not (bad, stale, or nothing new).
#[derive(Debug, Default)]
pub struct GossipTally {
    applied: std::sync::atomic::AtomicU64,
    not_applied: std::sync::atomic::AtomicU64,
}

impl GossipTally {
    pub fn record(&self, applied: bool) {
        let counter = if applied {
            &self.applied
        } else {
            &self.not_applied
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (applied, not applied) so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.applied.load(Relaxed), self.not_applied.load(Relaxed))
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").field("own", &self.own).finish()
    }
}

impl Discovery {
    pub fn new(
        swarm: Swarm,
        directory: Arc<RwLock<Directory>>,
        own: ServerName,
        policy: DiscoveryPolicy,
        learned: LearnHook,
    ) -> Self {
        Self {
            swarm,
            directory,
            own,
            policy: Arc::new(policy),
            learned,
            stranger_slots: Arc::new(tokio::sync::Semaphore::new(STRANGER_LOOKUPS)),
            misses: Arc::default(),
            gossip: Arc::default(),
        }
    }

    /// What came of the key announcements gossip brought.
    pub fn gossip_tally(&self) -> Arc<GossipTally> {
        self.gossip.clone()
    }

    /// The swarm (for gossip and status).
    pub fn swarm(&self) -> &Swarm {
        &self.swarm
    }

    /// Makes sure the directory knows `name`, looking it up if it does not.
    pub async fn resolve_name(&self, name: &ServerName) -> Result<(), ResolveError> {
        if self.directory.read().expect("directory lock").knows(name) {
            return Ok(());
        }
        if !self.policy.admits(name) || *name == self.own {
            return Err(ResolveError::NotAllowed(name.clone()));
        }
        let not_found = || ResolveError::NotFound(name.to_string());
        let (record, signed) = self.claim_of(name).await.ok_or_else(not_found)?;
        if self.learn(&record, &signed) {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// Hearths the DHT places closest to the hearth key `key` (at most `n`), each found by its
    /// key and checked as any discovered hearth is (and so learnt by the directory).
    pub async fn closest_hearths(&self, key: &PublicKey, n: usize) -> Vec<ServerName> {
        let mut answer = self.swarm.closest(*key);
        // The query ends by itself (at the latest when Kademlia's own timeout returns what it
        // found, which takes a while when a peer near the key is dead); this only bounds it.
        let bound = self.policy.timeout + Duration::from_secs(20);
        let keys = tokio::time::timeout(bound, answer.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut names = Vec::new();
        for key in keys.iter().take(n) {
            if let Ok(name) = self.resolve_key(key).await
                && name != self.own
            {
                names.push(name);
            }
        }
        names
    }

    /// The hearth that holds `key`, looked up if the directory does not know it. The record
    /// found under the key must also be the winning claim to its name (see [`Self::claim_of`]):
    /// a caller cannot take a name by publishing a record under its own key only.
    pub async fn resolve_key(&self, key: &PublicKey) -> Result<ServerName, ResolveError> {
        if let Ok(owner) = self
            .directory
            .read()
            .expect("directory lock")
            .owner(key, now_ms())
        {
            return Ok(owner.clone());
        }
        if self
            .misses
            .lock()
            .expect("misses lock")
            .get(key)
            .is_some_and(|at| at.elapsed() < MISS_MEMORY)
        {
            return Err(ResolveError::NotFound(hex(key.as_bytes())));
        }
        let Ok(_slot) = self.stranger_slots.try_acquire() else {
            return Err(ResolveError::Busy);
        };
        let found = async {
            let claimed = self.collect(key_key(key), |r| r.key == *key).await;
            let (record, _) = claimed.into_iter().next()?;
            if record.name == self.own || !self.policy.admits(&record.name) {
                return None;
            }
            let (winner, signed) = self.claim_of(&record.name).await?;
            (winner.key == *key && self.learn(&winner, &signed)).then_some(winner.name)
        }
        .await;
        found.ok_or_else(|| {
            let mut misses = self.misses.lock().expect("misses lock");
            if misses.len() >= MISSES_KEPT {
                misses.clear();
            }
            misses.insert(*key, std::time::Instant::now());
            ResolveError::NotFound(hex(key.as_bytes()))
        })
    }

    /// The claim to `name` most DHT nodes answer with (the newest record of that key). DHT
    /// nodes keep the first claim to a name, so a squatter is left answering with its own copy
    /// alone; a tie goes to the claim heard first.
    async fn claim_of(&self, name: &ServerName) -> Option<(HearthRecord, Vec<u8>)> {
        self.collect(name_key(name), |r| r.name == *name)
            .await
            .into_iter()
            .next()
    }

    /// Runs a DHT lookup and gathers the records that open and fit `wanted`, one per key (the
    /// newest), most answered first. Gathers until the lookup ends, the timeout, or
    /// [`SETTLE`] after the first fitting answer.
    async fn collect(
        &self,
        dht_key: Vec<u8>,
        wanted: impl Fn(&HearthRecord) -> bool,
    ) -> Vec<(HearthRecord, Vec<u8>)> {
        let mut found = self.swarm.get(dht_key);
        let mut deadline = tokio::time::Instant::now() + self.policy.timeout;
        // key → (answers, order first heard, newest record, its bytes)
        let mut claims: std::collections::HashMap<
            PublicKey,
            (usize, usize, HearthRecord, Vec<u8>),
        > = std::collections::HashMap::new();
        while let Ok(Some(value)) = tokio::time::timeout_at(deadline, found.recv()).await {
            let Ok(record) = hearth_crypto::open_record(&value) else {
                continue;
            };
            if !wanted(&record) {
                continue;
            }
            if claims.is_empty() {
                deadline = deadline.min(tokio::time::Instant::now() + SETTLE);
            }
            let order = claims.len();
            let claim = claims
                .entry(record.key)
                .or_insert_with(|| (0, order, record.clone(), value.clone()));
            claim.0 += 1;
            if record.issued_ms > claim.2.issued_ms {
                claim.2 = record;
                claim.3 = value;
            }
        }
        let mut claims: Vec<_> = claims.into_values().collect();
        claims.sort_by_key(|(answers, order, _, _)| (std::cmp::Reverse(*answers), *order));
        claims
            .into_iter()
            .map(|(_, _, record, signed)| (record, signed))
            .collect()
    }

    fn learn(&self, record: &HearthRecord, signed: &[u8]) -> bool {
        if record.name == self.own || !self.policy.admits(&record.name) {
            return false;
        }
        let learned = learn_record(
            &mut self.directory.write().expect("directory lock"),
            record,
            now_ms(),
        );
        match learned {
            Ok(how) => {
                if how != Learned::Unchanged {
                    tracing::info!(hearth = %record.name, address = %record.address, "learnt a hearth from the DHT");
                }
                (self.learned)(&record.name, signed, how);
                true
            }
            Err(e) => {
                tracing::warn!(hearth = %record.name, error = %e, "refused a DHT record");
                false
            }
        }
    }
}

/// Learns `record` (already opened) into `directory`. A hearth known with another key is
/// followed to the record's key if the record carries that key's signed hand-over (a rotation
/// this hearth missed).
pub fn learn_record(
    directory: &mut Directory,
    record: &HearthRecord,
    now_ms: u64,
) -> Result<Learned, LearnError> {
    let learn = |directory: &mut Directory| {
        directory.learn(
            &record.name,
            record.key,
            record.address,
            record.issued_ms,
            now_ms,
        )
    };
    let learned = learn(directory);
    let Err(LearnError::Pinned(_)) = learned else {
        return learned;
    };
    let Some(proof) = &record.previous else {
        return learned;
    };
    let known = directory
        .check_signer(&record.name, &proof.old_key, now_ms)
        .is_ok();
    if !known || !hearth_crypto::verify_key_proof(&record.name, &record.key, proof) {
        return learned;
    }
    if directory
        .rotate(
            &record.name,
            &proof.old_key,
            record.key,
            proof.old_valid_until_ms,
        )
        .is_err()
    {
        return learned;
    }
    tracing::info!(hearth = %record.name, "followed a key rotation found in the DHT");
    learn(directory).map(|_| Learned::Updated)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The swarm's view of this hearth: the key every peer accepts now (the one TLS presents) is its
/// libp2p identity and signs its record.
pub struct HearthIdentity {
    pub name: ServerName,
    pub keys: Arc<KeyRing>,
    /// The federation address peers should dial, as configured.
    pub address: SocketAddr,
    /// The address the transport really bound, once known: published instead of `address`
    /// (which may ask for port 0). Left unset when an address to advertise is configured.
    pub bound: Arc<std::sync::OnceLock<SocketAddr>>,
}

impl Identity for HearthIdentity {
    fn secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.keys.oldest_usable(now_ms()).to_bytes()
    }

    fn record(&self) -> (Vec<u8>, PublicKey, ServerName) {
        let now = now_ms();
        let key = self.keys.oldest_usable(now);
        // The most recent key this one took over from, if the ring still holds it.
        let previous = self
            .keys
            .retired()
            .into_iter()
            .filter(|(old, _)| old.public_key() != key.public_key())
            .max_by_key(|(_, until)| *until)
            .map(|(old, until)| {
                hearth_crypto::sign_key_proof(&old, &self.name, &key.public_key(), until)
            });
        let record = HearthRecord {
            version: RECORD_VERSION,
            name: self.name.clone(),
            key: key.public_key(),
            address: self.bound.get().copied().unwrap_or(self.address),
            issued_ms: now,
            previous,
        };
        (
            hearth_crypto::sign_record(&key, &record),
            record.key,
            self.name.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crypto::ServerKey;

    fn key(n: u8) -> ServerKey {
        ServerKey::from_bytes(&[n; 32]).unwrap()
    }

    fn record(name: &ServerName, key: &ServerKey, issued_ms: u64) -> HearthRecord {
        HearthRecord {
            version: RECORD_VERSION,
            name: name.clone(),
            key: key.public_key(),
            address: "127.0.0.1:7".parse().unwrap(),
            issued_ms,
            previous: None,
        }
    }

    #[test]
    fn a_missed_rotation_is_followed_only_with_the_known_keys_word() {
        let h = ServerName::parse("h.test").unwrap();
        let mut directory = Directory::default();
        assert_eq!(
            learn_record(&mut directory, &record(&h, &key(1), 1), 10),
            Ok(Learned::New)
        );
        // A record under a new key, without a proof: pinned.
        assert_eq!(
            learn_record(&mut directory, &record(&h, &key(2), 2), 10),
            Err(LearnError::Pinned(h.clone()))
        );
        // With a proof from a key the directory does not hold for h: still pinned.
        let mut stranger = record(&h, &key(2), 2);
        stranger.previous = Some(hearth_crypto::sign_key_proof(
            &key(3),
            &h,
            &key(2).public_key(),
            100,
        ));
        assert_eq!(
            learn_record(&mut directory, &stranger, 10),
            Err(LearnError::Pinned(h.clone()))
        );
        // With key 1's word: followed; key 1 verifies until the proof says.
        let mut rotated = record(&h, &key(2), 2);
        rotated.previous = Some(hearth_crypto::sign_key_proof(
            &key(1),
            &h,
            &key(2).public_key(),
            100,
        ));
        assert_eq!(
            learn_record(&mut directory, &rotated, 10),
            Ok(Learned::Updated)
        );
        assert_eq!(directory.current_key(&h), Some(key(2).public_key()));
        assert!(
            directory
                .check_signer(&h, &key(1).public_key(), 100)
                .is_ok()
        );
        assert!(
            directory
                .check_signer(&h, &key(1).public_key(), 101)
                .is_err()
        );
    }

    #[test]
    fn the_published_record_carries_the_hand_over_once_the_new_key_is_presented() {
        let name = ServerName::parse("h.test").unwrap();
        let ring = Arc::new(KeyRing::single(Arc::new(key(1))));
        let identity = HearthIdentity {
            name: name.clone(),
            keys: ring.clone(),
            address: "127.0.0.1:7".parse().unwrap(),
            bound: Arc::default(),
        };
        let open =
            |identity: &HearthIdentity| hearth_crypto::open_record(&identity.record().0).unwrap();
        assert_eq!(open(&identity).previous, None);
        // During the grace period TLS still presents key 1: so does the record.
        ring.rotate(Arc::new(key(2)), now_ms() + 3_600_000);
        let during = open(&identity);
        assert_eq!((during.key, during.previous), (key(1).public_key(), None));
        // A revocation (no grace): key 2 at once, with key 1's word for it.
        let revoked = Arc::new(KeyRing::single(Arc::new(key(1))));
        revoked.rotate(Arc::new(key(2)), now_ms());
        let identity = HearthIdentity {
            name: name.clone(),
            keys: revoked,
            address: "127.0.0.1:7".parse().unwrap(),
            bound: Arc::default(),
        };
        let after = open(&identity);
        assert_eq!(after.key, key(2).public_key());
        let proof = after.previous.unwrap();
        assert_eq!(proof.old_key, key(1).public_key());
        assert!(hearth_crypto::verify_key_proof(&name, &after.key, &proof));
    }
}
