//! Sending: encrypt, send, and on `stale_epoch` catch up and encrypt again; messages the home
//! refused and copies owed to readers who got in later are sent again.
use hearth_spec::api::Sequenced;
use hearth_spec::e2ee::ChatBody;
use hearth_spec::{ErrorCode, RoomId};

use super::{COMMIT_ATTEMPTS, Outgoing, SecureError, SecureSession};
use crate::hearth::{Hearth, new_txn_id};

impl<H: Hearth> SecureSession<H> {
    /// Encrypts and sends a text message.
    pub async fn send_text(&mut self, room: &RoomId, text: &str) -> Result<Sequenced, SecureError> {
        self.send_body(
            room,
            ChatBody {
                text: text.to_owned(),
                attachment: None,
            },
        )
        .await
    }

    /// Encrypts and sends a message body. When the room has moved to a new epoch the device
    /// has not seen (the home refuses the message as `stale_epoch`), catches up and encrypts
    /// again, so every member of the group the message lands in can read it.
    pub async fn send_body(
        &mut self,
        room: &RoomId,
        body: ChatBody,
    ) -> Result<Sequenced, SecureError> {
        self.converge_before_send(room).await;
        self.send_due_copies().await;
        self.send_outgoing(room, Outgoing::New(&body)).await
    }

    async fn send_outgoing(
        &mut self,
        room: &RoomId,
        mut next: Outgoing<'_>,
    ) -> Result<Sequenced, SecureError> {
        for _ in 0..COMMIT_ATTEMPTS {
            self.remove_departed(room).await?;
            let txn_id = new_txn_id();
            let ciphertext = match &next {
                Outgoing::New(body) => self.mls.encrypt(room, txn_id.as_str(), body)?,
                Outgoing::Refused(first) => self.mls.encrypt_refused(first, txn_id.as_str())?,
                Outgoing::Copy(id) => self.mls.encrypt_copy(room, *id, txn_id.as_str())?,
            };
            match self.hearth.send(room, &txn_id, &ciphertext).await {
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    match next {
                        // The caller still holds it, and learns if it never goes through.
                        Outgoing::New(_) => self.mls.forget_sent(txn_id.as_str())?,
                        // Nobody else holds it: it stays on disk until it goes through.
                        Outgoing::Refused(_) | Outgoing::Copy(_) => {
                            self.mls.refuse_sent(txn_id.as_str())?;
                            next = Outgoing::Refused(txn_id.as_str().to_owned());
                        }
                    }
                    self.catch_up(room).await?;
                }
                other => {
                    let sent = other?;
                    if matches!(next, Outgoing::New(_)) {
                        let waiting = self.cannot_read(room);
                        self.mls.owe(txn_id.as_str(), waiting)?;
                    }
                    // The message has left: the state's rewrite, when due, waits no longer.
                    // A failure is the next flush's to report; the message went.
                    if let Err(e) = self.mls.flush() {
                        tracing::warn!(error = %e, "cannot write the device state whole yet");
                    }
                    return Ok(sent);
                }
            }
        }
        Err(SecureError::Contended)
    }

    /// Sends again, under their first message id, the messages this device owes to readers
    /// who have got into the group since (see [`Mls::owe`]). Failures wait for the next call.
    pub(super) async fn send_due_copies(&mut self) {
        for (room, id) in self.mls.due_copies() {
            if let Err(e) = self.send_outgoing(&room, Outgoing::Copy(id)).await {
                tracing::warn!(%room, error = %e, "cannot send an owed message again yet");
                return;
            }
        }
    }

    /// Sends again, oldest first, this device's messages that the room's home cannot have
    /// taken: sent to a room homed on another hearth, they were on their way when another
    /// member's commit moved the room to a new epoch, and the home refused them. The device
    /// learns this without being told: the commit arrived and they did not come back before
    /// it. Messages of rooms this device can no longer write to are dropped.
    ///
    /// A failure here does not fail the sync or take that called it (what they processed must
    /// reach the caller, as MLS keys are single use): the messages stay on disk and the next
    /// call tries again.
    pub(super) async fn resend_refused(&mut self) {
        // Bounded: a message refused again waits for the next call.
        for (txn, room) in self.mls.refused() {
            let sent = if self.mls.in_group(&room) {
                self.send_outgoing(&room, Outgoing::Refused(txn))
                    .await
                    .map(drop)
            } else {
                self.mls.drop_refused(&txn).map_err(SecureError::from)
            };
            if let Err(e) = sent {
                tracing::warn!(%room, error = %e, "cannot send a refused message again yet");
                return;
            }
        }
        self.send_due_copies().await;
    }

    /// How many of this device's messages wait to be sent again (see [`Self::sync`]).
    pub fn waiting_to_resend(&self) -> usize {
        self.mls.refused().len()
    }
}
