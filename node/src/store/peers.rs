//! What this hearth learned about peers: their key rotations and their signed DHT records.

use hearth_spec::ServerName;
use redb::ReadableTable;

use super::tables::*;
use super::{Store, StoreError, decode, encode, parse_id};

impl Store {
    /// Records a rotation a peer announced, after the ones recorded before.
    pub fn save_peer_rotation(
        &self,
        peer: &ServerName,
        rotation: &PeerRotation,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(PEER_ROTATIONS)?;
            let next = table
                .range((peer.as_str(), 0)..=(peer.as_str(), u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value().1 + 1);
            table.insert((peer.as_str(), next), encode(rotation).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Keeps the signed record a hearth was learnt from (replacing an older one).
    pub fn save_discovered(&self, peer: &ServerName, signed: &[u8]) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(DISCOVERED)?.insert(peer.as_str(), signed)?;
        txn.commit()?;
        Ok(())
    }

    /// The signed records of every hearth learnt from the DHT.
    pub fn discovered(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(DISCOVERED)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Every recorded peer rotation, per peer in the order applied.
    pub fn peer_rotations(&self) -> Result<Vec<(ServerName, PeerRotation)>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PEER_ROTATIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((parse_id(k.value().0)?, decode(v.value())?));
        }
        Ok(out)
    }
}
