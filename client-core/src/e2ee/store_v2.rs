//! The device state as version 2 wrote it, read once and turned into the current version.
//! Frozen: never change these types.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hearth_spec::{DeviceId, RoomId, UserId};
use serde::Deserialize;

use super::saved::{RoomMeta, Saved, SentMessage};

#[derive(Deserialize)]
struct RoomMetaV2 {
    processed_seq: u64,
    seen: VecDeque<[u8; 16]>,
    departed: BTreeSet<UserId>,
    removed: bool,
    own_commit_epoch: Option<u64>,
}

#[derive(Deserialize)]
struct SentMessageV2 {
    room: RoomId,
    txn_id: String,
    body: Vec<u8>,
    epoch: u64,
    order: u64,
}

#[derive(Deserialize)]
pub struct SavedV2 {
    _version: u8,
    user: UserId,
    device: DeviceId,
    signer_public: Vec<u8>,
    storage: Vec<(Vec<u8>, Vec<u8>)>,
    rooms: BTreeMap<RoomId, RoomMetaV2>,
    sent: BTreeMap<String, SentMessageV2>,
    refused: Vec<SentMessageV2>,
    next_order: u64,
    cursor: u64,
}

impl From<SentMessageV2> for SentMessage {
    fn from(m: SentMessageV2) -> Self {
        Self {
            room: m.room,
            txn_id: m.txn_id,
            body: m.body,
            epoch: m.epoch,
            order: m.order,
            // Never seen by anyone (refused) or already on its way: a fresh id is as good.
            id: rand::random(),
            copy: false,
        }
    }
}

impl From<SavedV2> for Saved {
    fn from(v2: SavedV2) -> Self {
        let mut saved = Saved::new(v2.user, v2.device, v2.signer_public);
        saved.storage = v2.storage;
        saved.rooms = v2
            .rooms
            .into_iter()
            .map(|(room, m)| {
                let meta = RoomMeta {
                    processed_seq: m.processed_seq,
                    seen: m.seen,
                    departed: m.departed,
                    removed: m.removed,
                    own_commit_epoch: m.own_commit_epoch,
                    // What came before is not held against the read marks it sends.
                    joined_seq: Some(m.processed_seq),
                    seen_dropped: 0,
                };
                (room, meta)
            })
            .collect();
        saved.sent = v2.sent.into_iter().map(|(k, m)| (k, m.into())).collect();
        saved.refused = v2.refused.into_iter().map(Into::into).collect();
        saved.next_order = v2.next_order;
        saved.cursor = v2.cursor;
        saved
    }
}
