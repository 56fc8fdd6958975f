//! The device state as version 3 wrote it, read once and turned into the current version.
//! Frozen: never change this type. Its rooms are version 4's (`RoomMetaV4`); its other parts
//! (`SentMessage`, `OwedMessage`) are today's, unchanged since version 3; a version that changes
//! one freezes a copy here first.

use std::collections::BTreeMap;

use hearth_spec::{DeviceId, RoomId, UserId};
use serde::Deserialize;

use super::saved::{OwedMessage, STATE_VERSION, Saved, SentMessage};
use super::store_v4::RoomMetaV4;

#[derive(Deserialize)]
pub struct SavedV3 {
    _version: u8,
    user: UserId,
    device: DeviceId,
    signer_public: Vec<u8>,
    storage: Vec<(Vec<u8>, Vec<u8>)>,
    rooms: BTreeMap<RoomId, RoomMetaV4>,
    sent: BTreeMap<String, SentMessage>,
    refused: Vec<SentMessage>,
    next_order: u64,
    cursor: u64,
    owed: Vec<OwedMessage>,
}

impl From<SavedV3> for Saved {
    fn from(v3: SavedV3) -> Self {
        Saved {
            version: STATE_VERSION,
            user: v3.user,
            device: v3.device,
            signer_public: v3.signer_public,
            storage: v3.storage,
            rooms: v3.rooms.into_iter().map(|(r, m)| (r, m.into())).collect(),
            sent: v3.sent,
            refused: v3.refused,
            next_order: v3.next_order,
            cursor: v3.cursor,
            owed: v3.owed,
            unconfirmed: Default::default(),
            leased: Default::default(),
        }
    }
}
