//! Which key to sign with for a peer that has not yet taken this hearth's key announcement.
//!
//! After a rotation, the announcement of the new key waits in each peer's queue behind what was
//! queued before it. Until a peer takes it, that peer only knows the older key, so envelopes for
//! it are signed with the older key (while that key is valid); once the queue entry is
//! delivered, with the newer one.

use std::collections::HashMap;
use std::sync::Arc;

use hearth_crypto::ServerKey;
use hearth_spec::{PublicKey, ServerName};

use crate::KeyRing;

/// Per peer: the queue entries announcing a new key and the key each retires, oldest first.
#[derive(Debug, Default)]
pub struct Announcements {
    pending: HashMap<ServerName, Vec<(u64, PublicKey)>>,
}

impl Announcements {
    /// Queue entry `entry` for `peer` announces the key that replaces `retired`.
    pub fn queued(&mut self, peer: ServerName, entry: u64, retired: PublicKey) {
        self.pending.entry(peer).or_default().push((entry, retired));
    }

    /// `peer` took these queue entries (any kind: only announcements matter here).
    pub fn delivered(&mut self, peer: &ServerName, entries: &[u64]) {
        if let Some(pending) = self.pending.get_mut(peer) {
            pending.retain(|(id, _)| !entries.contains(id));
            if pending.is_empty() {
                self.pending.remove(peer);
            }
        }
    }

    /// The key to sign with for `peer` at `now_ms`: the oldest key it may still know of those
    /// `keys` holds and still accepts, else the current one.
    pub fn signing_key(&self, peer: &ServerName, keys: &KeyRing, now_ms: u64) -> Arc<ServerKey> {
        self.pending
            .get(peer)
            .and_then(|pending| pending.first())
            .and_then(|(_, old)| keys.usable(old, now_ms))
            .unwrap_or_else(|| keys.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn a_peer_gets_the_key_it_knows_until_it_takes_each_announcement() {
        let (k1, k2, k3) = (
            Arc::new(ServerKey::generate()),
            Arc::new(ServerKey::generate()),
            Arc::new(ServerKey::generate()),
        );
        // Two rotations: k1 → k2 → k3; both old keys valid until 10,000,000 (minus the switch margin for signing).
        let keys = KeyRing::new(
            k3.clone(),
            vec![(k1.clone(), 10_000_000), (k2.clone(), 10_000_000)],
        );
        let mut a = Announcements::default();
        a.queued(n("b.t"), 10, k1.public_key());
        a.queued(n("b.t"), 20, k2.public_key());
        let signer =
            |a: &Announcements, peer: &str, now| a.signing_key(&n(peer), &keys, now).public_key();
        assert_eq!(signer(&a, "b.t", 500), k1.public_key());
        assert_eq!(
            signer(&a, "c.t", 500),
            k3.public_key(),
            "another peer has nothing pending"
        );
        // Other entries delivered change nothing; the first announcement moves to k2.
        a.delivered(&n("b.t"), &[5, 6]);
        assert_eq!(signer(&a, "b.t", 500), k1.public_key());
        a.delivered(&n("b.t"), &[10]);
        assert_eq!(signer(&a, "b.t", 500), k2.public_key());
        // Past its validity an old key is no longer used, even if the peer has not caught up.
        assert_eq!(signer(&a, "b.t", 10_000_001), k3.public_key());
        a.delivered(&n("b.t"), &[20]);
        assert_eq!(signer(&a, "b.t", 500), k3.public_key());
        assert!(a.pending.is_empty());
    }
}
