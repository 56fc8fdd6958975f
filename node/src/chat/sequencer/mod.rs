//! The sequencer: the room-ordering state machine.
//!
//! For rooms this hearth is home to, it assigns each event the room's next sequence number and
//! queues it for every other member hearth. For rooms homed elsewhere it keeps a replica: local
//! users' events are queued for the home (accepted, not sequenced), and the home's sequenced
//! events are applied in order. Either way it holds each room's members and last sequence number
//! and each local user's inbox head, checks a request against them, and turns it into writes on
//! a [`Batch`]. It does no I/O and reads no
//! clock: the committer passes the time and random nonces in, and writes and fsyncs the batch.
//! If a commit fails the committer rebuilds the sequencer from the store, so memory never runs
//! ahead of disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hearth_spec::api::Sequenced;
use hearth_spec::client::ReceiptKind;
use hearth_spec::envelope::ENVELOPE_VERSION;
use hearth_spec::rooms::keep_an_admin;
use hearth_spec::{
    Content, DeviceId, Envelope, EventId, Membership, RoomId, RoomKind, ServerName, TxnId, UserId,
};

use crate::store::tables::{OutItem, RoomRecord};
use crate::store::{Batch, Cursor, InboxEntry, Mark, NewEvent, SequencerState, Submitted, Txn};

/// Longest room name in bytes.
pub const MAX_ROOM_NAME: usize = 256;

/// The lowest inbox position given at `now_ms`: positions follow the clock (and are one more than
/// the last where that is higher), so they sort by time and a restarted hearth gives none it may
/// have shown before a crash (`spec/storage.md`, "Shown before the flush").
pub fn clock_position(now_ms: u64) -> u64 {
    now_ms << 10
}

/// Whether a device may hold `cursor` in an inbox whose last stored position is `head`: one the
/// hearth gave, or one below any it can give from now on (a position a member hearth showed
/// before a flush that then failed, and gives again to something else no more).
pub fn cursor_in_range(cursor: u64, head: u64, now_ms: u64) -> bool {
    cursor <= head || cursor < clock_position(now_ms)
}

/// Why a request was refused. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("room {0} does not exist")]
    RoomNotFound(RoomId),
    #[error("you are not a member of {0}")]
    NotMember(RoomId),
    #[error("a direct chat has exactly two members; create a group to add more people")]
    DirectRoomInvite,
    #[error("a direct chat needs exactly one other member")]
    InvalidDirect,
    #[error("{0} is already a member")]
    AlreadyMember(UserId),
    #[error("{0} is not a member of the room")]
    NotInRoom(UserId),
    #[error("nobody is removed from a direct chat; leave it instead")]
    DirectRoomRemove,
    #[error("only the group's admins ({admins}) do that")]
    NotAdmin { admins: String },
    #[error("{0} is already an admin")]
    AlreadyAdmin(UserId),
    #[error("{0} is not an admin")]
    NotAnAdmin(UserId),
    #[error("a group keeps at least one admin: make another member admin first")]
    LastAdmin,
    #[error("a direct chat has no admins")]
    DirectRoomAdmin,
    #[error("the room would have more than {0} members")]
    RoomFull(usize),
    #[error("the room name is longer than {MAX_ROOM_NAME} bytes")]
    NameTooLong,
    #[error("room {0} already exists")]
    RoomExists(RoomId),
    #[error("seq {seq} is past the end of the room ({last})")]
    SeqOutOfRange { seq: u64, last: u64 },
    #[error("cursor {cursor} is past the end of the inbox ({head})")]
    CursorOutOfRange { cursor: u64, head: u64 },
    #[error("this hearth is not the home of {0}")]
    NotHome(RoomId),
    #[error("event {seq} arrived before {expected}")]
    OutOfOrder { seq: u64, expected: u64 },
    #[error("the event is not acceptable here: {0}")]
    BadEvent(&'static str),
    #[error("room {0} was shut down by this hearth's admin")]
    RoomClosed(RoomId),
    #[error(
        "the commit was made in epoch {got}; the room is at epoch {current}: catch up and retry"
    )]
    StaleEpoch { got: u64, current: u64 },
}

/// A request to the sequencer.
#[derive(Debug, Clone)]
pub enum Request {
    Send {
        user: UserId,
        device: DeviceId,
        room: RoomId,
        txn_id: TxnId,
        payload: Vec<u8>,
    },
    CreateRoom {
        user: UserId,
        device: DeviceId,
        room: RoomId,
        kind: RoomKind,
        name: Option<String>,
        members: Vec<UserId>,
        /// Random, to make the server-built events' txn ids unique.
        nonce: u64,
    },
    Invite {
        user: UserId,
        device: DeviceId,
        room: RoomId,
        target: UserId,
        nonce: u64,
    },
    Leave {
        user: UserId,
        device: DeviceId,
        room: RoomId,
        nonce: u64,
    },
    /// An admin of the group makes `target` an admin, or takes the role back.
    SetAdmin {
        user: UserId,
        device: DeviceId,
        room: RoomId,
        target: UserId,
        admin: bool,
        nonce: u64,
    },
    /// An admin of the group removes `target` (a leave event of `target`, sent by `user`).
    Remove {
        user: UserId,
        device: DeviceId,
        room: RoomId,
        target: UserId,
        nonce: u64,
    },
    /// An MLS commit made in `epoch`, with the Welcome for the devices it adds.
    Commit {
        user: UserId,
        device: DeviceId,
        room: RoomId,
        txn_id: TxnId,
        epoch: u64,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
    },
    MarkRead {
        user: UserId,
        room: RoomId,
        seq: u64,
    },
    Ack {
        user: UserId,
        device: DeviceId,
        cursor: u64,
    },
    /// From a member hearth (already checked to serve the sender): an event for this hearth,
    /// the room's home, to sequence.
    Submitted { envelope: Envelope, bytes: Vec<u8> },
    /// From the room's home (already checked to be the origin): an event at its place.
    Replicate {
        seq: u64,
        envelope: Envelope,
        bytes: Vec<u8>,
    },
    /// From a member hearth (already checked to serve `user`): how far its user has got. The
    /// mark may run ahead of this replica's last seq (the home's events may still be on their
    /// way); marks only rise.
    PeerReceipt {
        user: UserId,
        room: RoomId,
        kind: ReceiptKind,
        seq: u64,
    },
    /// An admin shuts a room down: each member of this hearth leaves it (a leave event made by
    /// the hearth as device `device`), and it takes no more messages, commits or invites; as a
    /// home, from anyone. Answers `ShutDown` with how many members left.
    Shutdown {
        room: RoomId,
        device: DeviceId,
        nonce: u64,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The request's (last) event and its place (no place yet when the home is elsewhere).
    Sequenced(Sequenced),
    Done,
    /// Already stored; nothing written.
    Duplicate,
    /// A room was shut down; this many of its members (this hearth's) left it.
    ShutDown {
        members_left: usize,
    },
}

/// Recent senders remembered per room, to address live receipts.
pub const RECENT_SENDERS: usize = 64;

#[derive(Debug, Clone)]
struct RoomState {
    kind: RoomKind,
    members: BTreeSet<UserId>,
    last_seq: u64,
    /// (seq, sender) of the latest events, oldest first.
    recent: std::collections::VecDeque<(u64, UserId)>,
    /// Other hearths with members in the room, and how many members each has.
    servers: BTreeMap<ServerName, usize>,
    /// The MLS epoch the next commit must be made in (the number of commits so far).
    epoch: u64,
    /// Shut down by an admin: no more messages, commits or invites.
    closed: bool,
    /// A group's admins (members all; a group with members has at least one).
    admins: BTreeSet<UserId>,
}

impl RoomState {
    fn new(kind: RoomKind, admins: BTreeSet<UserId>) -> Self {
        Self {
            admins,
            kind,
            members: BTreeSet::new(),
            last_seq: 0,
            recent: Default::default(),
            servers: BTreeMap::new(),
            epoch: 0,
            closed: false,
        }
    }
}

/// Sends already sequenced in the batch being built, by (user, device, txn).
type BatchTxns = HashMap<(UserId, DeviceId, TxnId), Sequenced>;

/// The state machine.
#[derive(Debug)]
pub struct Sequencer {
    local: ServerName,
    max_members: usize,
    rooms: HashMap<RoomId, RoomState>,
    inbox_heads: HashMap<UserId, u64>,
    batch_txns: BatchTxns,
}

impl Sequencer {
    /// Rebuilds the sequencer from what the store holds.
    pub fn new(state: SequencerState, local: ServerName, max_members: usize) -> Self {
        let closed: std::collections::HashSet<RoomId> = state.closed.into_iter().collect();
        let rooms = state
            .rooms
            .into_iter()
            .map(|resumed| {
                let room = resumed.room;
                let mut state = RoomState::new(resumed.record.kind, resumed.admins);
                state.last_seq = resumed.last_seq;
                state.epoch = resumed.epoch;
                state.closed = closed.contains(&room);
                for member in resumed.members {
                    let server = member.server_name();
                    if server != local {
                        *state.servers.entry(server).or_insert(0) += 1;
                    }
                    state.members.insert(member);
                }
                (room, state)
            })
            .collect();
        Self {
            local,
            max_members,
            rooms,
            inbox_heads: state.inbox_heads.into_iter().collect(),
            batch_txns: HashMap::new(),
        }
    }

    /// Gives no inbox position at or below these again (positions a commit that then failed
    /// showed to devices: see [`cursor_in_range`]).
    pub fn skip_inbox_positions(&mut self, shown: impl IntoIterator<Item = (UserId, u64)>) {
        for (user, position) in shown {
            let head = self.inbox_heads.entry(user).or_insert(0);
            *head = (*head).max(position);
        }
    }

    /// Starts a new batch: forgets per-batch de-duplication (the store has it after commit).
    pub fn begin_batch(&mut self) {
        self.batch_txns.clear();
    }

    /// Whether `user` is a member of `room` (as of the batch being built).
    pub fn is_member(&self, room: &RoomId, user: &UserId) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.contains(user))
    }

    /// Checks a request and adds its writes to `batch`. `now_ms` is the wall clock.
    pub fn apply(
        &mut self,
        request: Request,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Result<Reply, SequenceError> {
        match request {
            Request::Send {
                user,
                device,
                room,
                txn_id,
                payload,
            } => self.send(
                user,
                device,
                room,
                txn_id,
                Content::Message { payload },
                now_ms,
                batch,
            ),
            Request::Commit {
                user,
                device,
                room,
                txn_id,
                epoch,
                commit,
                welcome,
            } => {
                let content = Content::Commit {
                    epoch,
                    commit,
                    welcome,
                };
                self.send(user, device, room, txn_id, content, now_ms, batch)
            }
            Request::CreateRoom {
                user,
                device,
                room,
                kind,
                name,
                members,
                nonce,
            } => {
                if self.rooms.contains_key(&room) {
                    return Err(SequenceError::RoomExists(room));
                }
                if !self.is_home(&room) {
                    return Err(SequenceError::NotHome(room));
                }
                if name.as_ref().is_some_and(|n| n.len() > MAX_ROOM_NAME) {
                    return Err(SequenceError::NameTooLong);
                }
                let others: BTreeSet<UserId> = members.into_iter().filter(|m| *m != user).collect();
                if kind == RoomKind::Direct && others.len() != 1 {
                    return Err(SequenceError::InvalidDirect);
                }
                if others.len() + 1 > self.max_members {
                    return Err(SequenceError::RoomFull(self.max_members));
                }
                let admins = admins_at_creation(kind, &user);
                if !admins.is_empty() {
                    store_admins(batch, &room, &admins);
                }
                self.rooms
                    .insert(room.clone(), RoomState::new(kind, admins));
                batch.rooms.push((
                    room.clone(),
                    RoomRecord {
                        kind,
                        name: name.clone(),
                        created_ts: now_ms,
                    },
                ));
                let mut step = 0u32;
                let mut next_txn = || {
                    step += 1;
                    server_txn(nonce, step)
                };
                let create = envelope(
                    &room,
                    &user,
                    &device,
                    next_txn(),
                    now_ms,
                    Content::Create { kind, name },
                );
                // The creator joins first so that it receives the create event too.
                self.join(&room, &user, batch);
                let mut last = self.append(&room, create, now_ms, batch);
                for member in std::iter::once(user.clone()).chain(others) {
                    if member != user {
                        self.join(&room, &member, batch);
                    }
                    let content = Content::Member {
                        target: member,
                        membership: Membership::Join,
                    };
                    let event = envelope(&room, &user, &device, next_txn(), now_ms, content);
                    last = self.append(&room, event, now_ms, batch);
                }
                batch.read_marks.push(Mark {
                    user,
                    room,
                    seq: seq_of(&last),
                });
                Ok(Reply::Sequenced(last))
            }
            Request::Invite {
                user,
                device,
                room,
                target,
                nonce,
            } => {
                self.open_room(&room)?;
                self.check_invite(&room, &user, &target)?;
                let content = Content::Member {
                    target: target.clone(),
                    membership: Membership::Join,
                };
                let event = envelope(&room, &user, &device, server_txn(nonce, 1), now_ms, content);
                if !self.is_home(&room) {
                    return Ok(Reply::Sequenced(submit(event, batch)));
                }
                self.join(&room, &target, batch);
                Ok(Reply::Sequenced(self.append(&room, event, now_ms, batch)))
            }
            Request::Leave {
                user,
                device,
                room,
                nonce,
            } => {
                self.member_room(&room, &user)?;
                let txn = server_txn(nonce, 1);
                Ok(Reply::Sequenced(self.leave_event(
                    &room, &user, &user, &device, txn, now_ms, batch,
                )))
            }
            Request::Remove {
                user,
                device,
                room,
                target,
                nonce,
            } => {
                self.check_remove(&room, &user, &target)?;
                let txn = server_txn(nonce, 1);
                Ok(Reply::Sequenced(self.leave_event(
                    &room, &user, &target, &device, txn, now_ms, batch,
                )))
            }
            Request::SetAdmin {
                user,
                device,
                room,
                target,
                admin,
                nonce,
            } => {
                self.open_room(&room)?;
                self.check_set_admin(&room, &user, &target, admin)?;
                let content = Content::Admin {
                    target: target.clone(),
                    admin,
                };
                let event = envelope(&room, &user, &device, server_txn(nonce, 1), now_ms, content);
                if !self.is_home(&room) {
                    return Ok(Reply::Sequenced(submit(event, batch)));
                }
                self.set_admin(&room, &target, admin, batch);
                Ok(Reply::Sequenced(self.append(&room, event, now_ms, batch)))
            }
            Request::Shutdown {
                room,
                device,
                nonce,
            } => {
                let state = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| SequenceError::RoomNotFound(room.clone()))?;
                state.closed = true;
                let local: Vec<UserId> = state
                    .members
                    .iter()
                    .filter(|m| m.server_name() == self.local)
                    .cloned()
                    .collect();
                for (step, user) in (1..).zip(&local) {
                    let txn = server_txn(nonce, step);
                    self.leave_event(&room, user, user, &device, txn, now_ms, batch);
                }
                batch.closed_rooms.push((room, now_ms));
                Ok(Reply::ShutDown {
                    members_left: local.len(),
                })
            }
            Request::MarkRead { user, room, seq } => {
                self.check_read(&room, &user, seq)?;
                batch.read_marks.push(Mark { user, room, seq });
                Ok(Reply::Done)
            }
            Request::Ack {
                user,
                device,
                cursor,
            } => {
                let head = self.inbox_heads.get(&user).copied().unwrap_or(0);
                if !cursor_in_range(cursor, head, now_ms) {
                    return Err(SequenceError::CursorOutOfRange { cursor, head });
                }
                batch.cursors.push(Cursor {
                    user,
                    device,
                    position: cursor,
                });
                Ok(Reply::Done)
            }
            Request::Submitted { envelope, bytes } => {
                self.sequence_submitted(envelope, bytes, now_ms, batch)
            }
            Request::PeerReceipt {
                user,
                room,
                kind,
                seq,
            } => {
                self.member_room(&room, &user)?;
                match kind {
                    ReceiptKind::Read => batch.read_marks.push(Mark { user, room, seq }),
                    ReceiptKind::Delivered => batch.delivered.push(Mark { user, room, seq }),
                }
                Ok(Reply::Done)
            }
            Request::Replicate {
                seq,
                envelope,
                bytes,
            } => self.replicate(seq, envelope, bytes, now_ms, batch),
        }
    }

    /// A local device's message or commit: sequenced here when this hearth is the room's home,
    /// queued for the home otherwise (which checks a commit's epoch itself).
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        user: UserId,
        device: DeviceId,
        room: RoomId,
        txn_id: TxnId,
        content: Content,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Result<Reply, SequenceError> {
        let key = (user.clone(), device.clone(), txn_id.clone());
        if let Some(done) = self.batch_txns.get(&key) {
            return Ok(Reply::Sequenced(done.clone()));
        }
        self.member_room(&room, &user)?;
        self.open_room(&room)?;
        let is_message = matches!(content, Content::Message { .. });
        let envelope = envelope(&room, &user, &device, txn_id.clone(), now_ms, content);
        let sequenced = if self.is_home(&room) {
            self.check_message_epoch(&room, &envelope.content)?;
            self.check_commit(&room, &envelope.content, batch)?;
            let sequenced = self.append(&room, envelope, now_ms, batch);
            if is_message {
                // What one sends oneself is read.
                batch.read_marks.push(Mark {
                    user: user.clone(),
                    room: room.clone(),
                    seq: seq_of(&sequenced),
                });
            }
            batch.txns.push(Txn {
                user,
                device,
                txn: txn_id.to_string(),
                event: sequenced.event_id,
                room,
                seq: seq_of(&sequenced),
            });
            sequenced
        } else {
            let sequenced = submit(envelope, batch);
            batch.submitted.push(Submitted {
                user,
                device,
                txn: txn_id.to_string(),
                room,
                event: sequenced.event_id,
            });
            sequenced
        };
        self.batch_txns.insert(key, sequenced.clone());
        Ok(Reply::Sequenced(sequenced))
    }

    /// The delivery-service rule: a commit must be made in the room's current epoch, and then
    /// moves the room to the next one. Anything else passes unchanged.
    fn check_commit(
        &mut self,
        room: &RoomId,
        content: &Content,
        batch: &mut Batch,
    ) -> Result<(), SequenceError> {
        let Content::Commit { epoch, .. } = content else {
            return Ok(());
        };
        let state = self
            .rooms
            .get_mut(room)
            .ok_or_else(|| SequenceError::RoomNotFound(room.clone()))?;
        if *epoch != state.epoch {
            return Err(SequenceError::StaleEpoch {
                got: *epoch,
                current: state.epoch,
            });
        }
        state.epoch += 1;
        batch.epochs.push((room.clone(), state.epoch));
        Ok(())
    }

    /// An MLS message must be made in the room's current epoch: one made before the latest
    /// commit could not be read by the devices that commit added. Payloads that are not MLS
    /// private messages of this room's group pass (they are opaque, and no member can read them).
    fn check_message_epoch(&self, room: &RoomId, content: &Content) -> Result<(), SequenceError> {
        let Content::Message { payload } = content else {
            return Ok(());
        };
        let Some((group, epoch)) = hearth_spec::e2ee::private_message_epoch(payload) else {
            return Ok(());
        };
        let current = self.rooms.get(room).map_or(0, |r| r.epoch);
        if group == room.as_str().as_bytes() && epoch != current {
            return Err(SequenceError::StaleEpoch {
                got: epoch,
                current,
            });
        }
        Ok(())
    }

    /// The MLS epoch the room's next commit must be made in.
    pub fn epoch(&self, room: &RoomId) -> Option<u64> {
        self.rooms.get(room).map(|r| r.epoch)
    }

    /// The home sequences a member hearth's event after the same checks as a local request.
    fn sequence_submitted(
        &mut self,
        envelope: Envelope,
        bytes: Vec<u8>,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Result<Reply, SequenceError> {
        let room = envelope.room_id.clone();
        if !self.is_home(&room) {
            return Err(SequenceError::NotHome(room));
        }
        let key = (
            envelope.sender.clone(),
            envelope.sender_device.clone(),
            envelope.txn_id.clone(),
        );
        if self.batch_txns.contains_key(&key) {
            return Ok(Reply::Duplicate);
        }
        let sender = envelope.sender.clone();
        self.member_room(&room, &sender)?;
        // A closed room still lets its remaining members go.
        if !matches!(
            &envelope.content,
            Content::Member {
                membership: Membership::Leave,
                ..
            }
        ) {
            self.open_room(&room)?;
        }
        let mut leaving = None;
        match &envelope.content {
            Content::Message { .. } => self.check_message_epoch(&room, &envelope.content)?,
            Content::Commit { .. } => self.check_commit(&room, &envelope.content, batch)?,
            Content::Member {
                target,
                membership: Membership::Join,
            } if *target != sender => {
                self.check_invite(&room, &sender, target)?;
                let target = target.clone();
                self.join(&room, &target, batch);
            }
            Content::Member {
                target,
                membership: Membership::Leave,
            } => {
                if *target != sender {
                    self.check_remove(&room, &sender, target)?;
                }
                leaving = Some(target.clone());
            }
            Content::Member {
                membership: Membership::Join,
                ..
            } => {
                return Err(SequenceError::BadEvent(
                    "members invite others, not themselves",
                ));
            }
            Content::Admin { target, admin } => {
                self.check_set_admin(&room, &sender, target, *admin)?;
                let target = target.clone();
                self.set_admin(&room, &target, *admin, batch);
            }
            Content::Create { .. } => {
                return Err(SequenceError::BadEvent("rooms are created by their home"));
            }
            Content::Purged {} => {
                return Err(SequenceError::BadEvent(
                    "a purged slot is made by the hearth, never sent",
                ));
            }
        }
        let sequenced = self.append_encoded(&room, sender.clone(), bytes, now_ms, batch);
        if let Some(leaver) = leaving {
            self.leave(&room, &leaver, batch);
        }
        batch.txns.push(Txn {
            user: key.0.clone(),
            device: key.1.clone(),
            txn: key.2.to_string(),
            event: sequenced.event_id,
            room,
            seq: seq_of(&sequenced),
        });
        self.batch_txns.insert(key, sequenced.clone());
        Ok(Reply::Sequenced(sequenced))
    }

    /// A member hearth applies its room home's event at `seq`, which must be the next one.
    fn replicate(
        &mut self,
        seq: u64,
        envelope: Envelope,
        bytes: Vec<u8>,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Result<Reply, SequenceError> {
        let room = envelope.room_id.clone();
        if self.is_home(&room) {
            return Err(SequenceError::NotHome(room));
        }
        match self.rooms.get(&room) {
            None => {
                if seq != 1 {
                    return Err(SequenceError::OutOfOrder { seq, expected: 1 });
                }
                let Content::Create { kind, name } = &envelope.content else {
                    return Err(SequenceError::BadEvent(
                        "a room starts with its create event",
                    ));
                };
                let admins = admins_at_creation(*kind, &envelope.sender);
                if !admins.is_empty() {
                    store_admins(batch, &room, &admins);
                }
                self.rooms
                    .insert(room.clone(), RoomState::new(*kind, admins));
                batch.rooms.push((
                    room.clone(),
                    RoomRecord {
                        kind: *kind,
                        name: name.clone(),
                        created_ts: envelope.origin_ts,
                    },
                ));
            }
            Some(state) => {
                if seq <= state.last_seq {
                    return Ok(Reply::Duplicate);
                }
                if seq != state.last_seq + 1 {
                    return Err(SequenceError::OutOfOrder {
                        seq,
                        expected: state.last_seq + 1,
                    });
                }
                if matches!(envelope.content, Content::Create { .. }) {
                    return Err(SequenceError::BadEvent("a room has one create event"));
                }
            }
        }
        if let Content::Commit { epoch, .. } = &envelope.content {
            // The home decided; a replica follows its count.
            let state = self.rooms.get_mut(&room).expect("room exists");
            state.epoch = epoch + 1;
            batch.epochs.push((room.clone(), state.epoch));
        }
        let mut leaver = None;
        match &envelope.content {
            Content::Member { target, membership } => match membership {
                Membership::Join => self.join(&room, target, batch),
                Membership::Leave => leaver = Some(target.clone()),
            },
            // The home checked it; a replica follows.
            Content::Admin { target, admin } => self.set_admin(&room, target, *admin, batch),
            _ => {}
        }
        let sender = envelope.sender.clone();
        let sequenced = self.append_encoded(&room, sender.clone(), bytes, now_ms, batch);
        if let Some(leaver) = leaver {
            self.leave(&room, &leaver, batch);
        }
        if sender.server_name() == self.local {
            // This hearth's user's send is back from the home: a resend of its transaction now
            // finds its place.
            batch.txns.push(Txn {
                user: sender.clone(),
                device: envelope.sender_device.clone(),
                txn: envelope.txn_id.to_string(),
                event: sequenced.event_id,
                room: room.clone(),
                seq,
            });
        }
        if sender.server_name() == self.local && matches!(envelope.content, Content::Message { .. })
        {
            // What one sends oneself is read.
            batch.read_marks.push(Mark {
                user: sender,
                room,
                seq,
            });
        }
        Ok(Reply::Sequenced(sequenced))
    }

    /// Whether this hearth orders `room`.
    pub fn is_home(&self, room: &RoomId) -> bool {
        room.home() == self.local
    }

    /// Checks that `user` may mark `room` read up to `seq`.
    pub fn check_read(&self, room: &RoomId, user: &UserId, seq: u64) -> Result<(), SequenceError> {
        let state = self.member_room(room, user)?;
        if seq > state.last_seq {
            return Err(SequenceError::SeqOutOfRange {
                seq,
                last: state.last_seq,
            });
        }
        Ok(())
    }

    /// The distinct senders of the room's events with seq in (`after`, `upto`], as far as the
    /// recent-sender memory reaches.
    pub fn senders_between(&self, room: &RoomId, after: u64, upto: u64) -> BTreeSet<UserId> {
        self.rooms
            .get(room)
            .map(|state| {
                state
                    .recent
                    .iter()
                    .filter(|(seq, _)| *seq > after && *seq <= upto)
                    .map(|(_, sender)| sender.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The other hearths with members in `room`.
    pub fn other_servers(&self, room: &RoomId) -> Vec<ServerName> {
        self.rooms
            .get(room)
            .map(|state| state.servers.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `inviter` may bring `target` into `room`: a member inviting a newcomer to a group
    /// that has room for one more.
    fn check_invite(
        &self,
        room: &RoomId,
        inviter: &UserId,
        target: &UserId,
    ) -> Result<(), SequenceError> {
        let state = self.member_room(room, inviter)?;
        if state.kind == RoomKind::Direct {
            return Err(SequenceError::DirectRoomInvite);
        }
        if state.members.contains(target) {
            return Err(SequenceError::AlreadyMember(target.clone()));
        }
        if state.members.len() + 1 > self.max_members {
            return Err(SequenceError::RoomFull(self.max_members));
        }
        Ok(())
    }

    /// The group `user` is a member and an admin of.
    fn admin_room(&self, room: &RoomId, user: &UserId) -> Result<&RoomState, SequenceError> {
        let state = self.member_room(room, user)?;
        if !state.admins.contains(user) {
            let admins: Vec<&str> = state.admins.iter().map(UserId::as_str).collect();
            return Err(SequenceError::NotAdmin {
                admins: admins.join(", "),
            });
        }
        Ok(state)
    }

    /// Whether `remover` may remove `target` from `room`: an admin of the group removing another
    /// member (admins included). A closed room still lets its members go.
    fn check_remove(
        &self,
        room: &RoomId,
        remover: &UserId,
        target: &UserId,
    ) -> Result<(), SequenceError> {
        self.admin_about(room, remover, target, SequenceError::DirectRoomRemove)
            .map(drop)
    }

    /// The group `by` is an admin of, when `target` is a member of it; `direct` for a direct
    /// chat, which has no admins.
    fn admin_about(
        &self,
        room: &RoomId,
        by: &UserId,
        target: &UserId,
        direct: SequenceError,
    ) -> Result<&RoomState, SequenceError> {
        if self.member_room(room, by)?.kind == RoomKind::Direct {
            return Err(direct);
        }
        let state = self.admin_room(room, by)?;
        if !state.members.contains(target) {
            return Err(SequenceError::NotInRoom(target.clone()));
        }
        Ok(state)
    }

    /// Whether `by` may make `target` an admin of `room` (`admin`), or take the role back: an
    /// admin, about a member, changing something, and leaving the group an admin.
    fn check_set_admin(
        &self,
        room: &RoomId,
        by: &UserId,
        target: &UserId,
        admin: bool,
    ) -> Result<(), SequenceError> {
        let state = self.admin_about(room, by, target, SequenceError::DirectRoomAdmin)?;
        match (admin, state.admins.contains(target)) {
            (true, true) => Err(SequenceError::AlreadyAdmin(target.clone())),
            (false, false) => Err(SequenceError::NotAnAdmin(target.clone())),
            (false, true) if state.admins.len() == 1 => Err(SequenceError::LastAdmin),
            _ => Ok(()),
        }
    }

    /// Applies an admin change (checked by the home) and stores the room's admins.
    fn set_admin(&mut self, room: &RoomId, target: &UserId, admin: bool, batch: &mut Batch) {
        if let Some(state) = self.rooms.get_mut(room) {
            if admin {
                state.admins.insert(target.clone());
            } else {
                state.admins.remove(target);
            }
            keep_an_admin(&mut state.admins, &state.members);
            store_admins(batch, room, &state.admins);
        }
    }

    /// The admins of a group, in id order (none for a direct chat or a room this hearth does not
    /// hold).
    pub fn admins(&self, room: &RoomId) -> Vec<UserId> {
        self.rooms
            .get(room)
            .map(|state| state.admins.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn open_room(&self, room: &RoomId) -> Result<(), SequenceError> {
        match self.rooms.get(room) {
            Some(state) if state.closed => Err(SequenceError::RoomClosed(room.clone())),
            _ => Ok(()),
        }
    }

    /// `leaver` leaves `room` (by `sender`: themselves, or an admin removing them): sequenced
    /// here as its home, or submitted to the home.
    #[allow(clippy::too_many_arguments)]
    fn leave_event(
        &mut self,
        room: &RoomId,
        sender: &UserId,
        leaver: &UserId,
        device: &DeviceId,
        txn: TxnId,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Sequenced {
        let content = Content::Member {
            target: leaver.clone(),
            membership: Membership::Leave,
        };
        let event = envelope(room, sender, device, txn, now_ms, content);
        if !self.is_home(room) {
            return submit(event, batch);
        }
        // The leaver's devices see their leave; nothing after it.
        let sequenced = self.append(room, event, now_ms, batch);
        self.leave(room, leaver, batch);
        sequenced
    }

    fn member_room(&self, room: &RoomId, user: &UserId) -> Result<&RoomState, SequenceError> {
        let state = self
            .rooms
            .get(room)
            .ok_or_else(|| SequenceError::RoomNotFound(room.clone()))?;
        if !state.members.contains(user) {
            return Err(SequenceError::NotMember(room.clone()));
        }
        Ok(state)
    }

    fn join(&mut self, room: &RoomId, user: &UserId, batch: &mut Batch) {
        let home = self.is_home(room);
        let server = user.server_name();
        let remote = server != self.local;
        if let Some(state) = self.rooms.get_mut(room)
            && state.members.insert(user.clone())
            && remote
        {
            let count = state.servers.entry(server.clone()).or_insert(0);
            *count += 1;
            if *count == 1 && home {
                // A hearth new to the room gets its history first, in order.
                for seq in 1..=state.last_seq {
                    batch.outbox.push((
                        server.clone(),
                        OutItem::Sequenced {
                            room: room.clone(),
                            seq,
                        },
                    ));
                }
            }
        }
        batch.joins.push((room.clone(), user.clone()));
    }

    fn leave(&mut self, room: &RoomId, user: &UserId, batch: &mut Batch) {
        if let Some(state) = self.rooms.get_mut(room)
            && state.members.remove(user)
        {
            if state.admins.remove(user) {
                // The last admin gone, the member first by id steps in (on every hearth alike).
                keep_an_admin(&mut state.admins, &state.members);
                store_admins(batch, room, &state.admins);
            }
            let server = user.server_name();
            if let Some(count) = state.servers.get_mut(&server) {
                *count -= 1;
                if *count == 0 {
                    state.servers.remove(&server);
                }
            }
        }
        batch.leaves.push((room.clone(), user.clone()));
    }

    /// Gives the envelope the room's next seq (see [`Self::append_encoded`]).
    fn append(
        &mut self,
        room: &RoomId,
        envelope: Envelope,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Sequenced {
        let sender = envelope.sender.clone();
        self.append_encoded(room, sender, envelope.encode(), now_ms, batch)
    }

    /// Places an encoded envelope at the room's next seq, appends it to every local member's
    /// inbox and, in a room homed here, queues it for every other member hearth.
    fn append_encoded(
        &mut self,
        room: &RoomId,
        sender: UserId,
        bytes: Vec<u8>,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Sequenced {
        let home = self.is_home(room);
        let state = self.rooms.get_mut(room).expect("caller checked the room");
        state.last_seq += 1;
        let seq = state.last_seq;
        if state.recent.len() == RECENT_SENDERS {
            state.recent.pop_front();
        }
        state.recent.push_back((seq, sender.clone()));
        let event_id = EventId::of_bytes(&bytes);
        batch.events.push(NewEvent {
            room: room.clone(),
            seq,
            id: event_id,
            bytes,
            sender,
        });
        for member in &state.members {
            if member.server_name() != self.local {
                continue;
            }
            let head = self.inbox_heads.entry(member.clone()).or_insert(0);
            *head = (*head + 1).max(clock_position(now_ms));
            batch.inbox.push(InboxEntry {
                user: member.clone(),
                position: *head,
                room: room.clone(),
                seq,
            });
        }
        if home {
            for server in state.servers.keys() {
                batch.outbox.push((
                    server.clone(),
                    OutItem::Sequenced {
                        room: room.clone(),
                        seq,
                    },
                ));
            }
        }
        Sequenced {
            room_id: room.clone(),
            event_id,
            seq: Some(seq),
        }
    }
}

/// Writes a group's admins, all of them (the store replaces the room's rows).
fn store_admins(batch: &mut Batch, room: &RoomId, admins: &BTreeSet<UserId>) {
    batch
        .admins
        .push((room.clone(), admins.iter().cloned().collect()));
}

/// The admins a new room starts with: a group's creator; a direct chat has none.
fn admins_at_creation(kind: RoomKind, creator: &UserId) -> BTreeSet<UserId> {
    match kind {
        RoomKind::Group => BTreeSet::from([creator.clone()]),
        RoomKind::Direct => BTreeSet::new(),
    }
}

/// Queues a local user's event for the room's home; it is accepted, not yet sequenced.
fn submit(envelope: Envelope, batch: &mut Batch) -> Sequenced {
    let bytes = envelope.encode();
    let event_id = EventId::of_bytes(&bytes);
    let room_id = envelope.room_id;
    batch
        .outbox
        .push((room_id.home(), OutItem::Submit { event: bytes }));
    Sequenced {
        room_id,
        event_id,
        seq: None,
    }
}

/// The place of an event this hearth sequenced itself.
fn seq_of(sequenced: &Sequenced) -> u64 {
    sequenced.seq.expect("sequenced here")
}

fn server_txn(nonce: u64, step: u32) -> TxnId {
    TxnId::parse(&format!("srv.{nonce:016x}.{step}")).expect("valid txn id")
}

fn envelope(
    room: &RoomId,
    sender: &UserId,
    device: &DeviceId,
    txn_id: TxnId,
    origin_ts: u64,
    content: Content,
) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        room_id: room.clone(),
        sender: sender.clone(),
        sender_device: device.clone(),
        txn_id,
        origin_ts,
        content,
    }
}

#[cfg(test)]
mod tests;
