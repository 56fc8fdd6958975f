//! Room events from a device's send to every member's devices: the [`sequencer`] decides each
//! event's place, [`decide`] works out what each request of a batch writes and announces, the
//! [`committer`] makes batches of them durable in one transaction, the
//! [`hub`] and [`live`] connections deliver them, [`media`] keeps attachments, and
//! [`key_requests`] finds the devices and key packages a room's encryption needs.

pub mod commit_error;
pub mod committer;
pub mod decide;
pub mod hub;
pub mod key_requests;
pub mod live;
pub mod media;
pub mod sequencer;
