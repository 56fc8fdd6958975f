//! Receiving: the inbox in order, each room's gaps filled from its history first.
use hearth_spec::api::RoomSummary;
use hearth_spec::{EventView, RoomId};

use super::{SecureError, SecureSession};
use crate::e2ee::{E2eeError, Received};
use crate::hearth::Hearth;

impl<H: Hearth> SecureSession<H> {
    /// Pulls the inbox after this device's cursor and processes it; returns what happened,
    /// including what the device processed on its own since the last call (in the order it was
    /// processed). Then sends again this device's messages the room's home refused (see
    /// `resend_refused`); [`Self::take`] does the same.
    ///
    /// Messages decrypted here stay in the device state ([`Mls::unconfirmed`]) until the app
    /// says it has stored them with [`Mls::kept`]: a crash or an error between the two loses
    /// nothing.
    pub async fn sync(&mut self) -> Result<Vec<Received>, SecureError> {
        let mut out = self.take_unreported();
        loop {
            let page = self.hearth.sync(Some(self.mls.cursor()), 500).await?;
            for item in &page.items {
                let received = self.take(&item.event).await?;
                out.append(&mut self.unreported);
                out.push(received);
            }
            self.mls.set_cursor(page.next_cursor)?;
            if !page.more {
                self.resend_refused().await;
                return Ok(out);
            }
        }
    }

    /// What the device processed on its own since the last call (or the last [`Self::sync`]):
    /// events of a room taken while catching up before a commit or a send, or to fill a gap
    /// before an event given to [`Self::take`]. Callers that keep what was read (a chat client)
    /// take these too.
    pub fn take_unreported(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.unreported)
    }

    /// Processes one event (from sync or the live WebSocket), fetching any events of its room
    /// this device missed first (those are kept for [`Self::take_unreported`]).
    pub async fn take(&mut self, event: &EventView) -> Result<Received, SecureError> {
        let received = match self.mls.receive(event) {
            Err(E2eeError::Gap { room, .. }) => {
                self.fill(&room, event.seq).await?;
                self.mls.receive(event)?
            }
            other => other?,
        };
        self.resend_refused().await;
        Ok(received)
    }

    /// Processes the room's events from the last one processed up to (not including) `upto`.
    async fn fill(&mut self, room: &RoomId, upto: u64) -> Result<(), SecureError> {
        while self.mls.processed_seq(room) + 1 < upto {
            let from = self.mls.processed_seq(room);
            let limit = (upto - from - 1).min(500) as usize;
            let page = self
                .hearth
                .history(room, Some(from + limit as u64 + 1), limit)
                .await?;
            if page.events.is_empty() {
                break;
            }
            for event in page.events.iter().filter(|e| e.seq > from) {
                let received = self.mls.receive(event)?;
                if received != Received::Duplicate {
                    self.unreported.push(received);
                }
            }
        }
        Ok(())
    }

    /// Processes every event of `room` up to its newest; the room as the hearth sees it.
    pub async fn catch_up(&mut self, room: &RoomId) -> Result<RoomSummary, SecureError> {
        let summary = self.hearth.room(room).await?;
        if self.mls.in_group(room) {
            self.fill(room, summary.last_seq + 1).await?;
        }
        Ok(summary)
    }
}
