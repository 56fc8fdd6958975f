//! `hearth-chat`'s local store of decrypted messages. An MLS device can decrypt a message only
//! once (its keys are deleted after use), so what it read is kept here, by room and sequence
//! number, and history is shown from here. An append-only JSON-lines file, readable only by
//! its owner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hearth_client::e2ee::Received;
use hearth_client::search::SearchIndex;
use hearth_client::shown::{Shown, kept_at};
use hearth_spec::RoomId;

/// Every message this profile has read.
#[derive(Debug)]
pub struct LocalMessages {
    path: PathBuf,
    map: HashMap<(RoomId, u64), Shown>,
    /// Every message's words, for `hearth-chat search` (built as the file is read).
    index: SearchIndex,
    /// The file ends in a line a crash cut short.
    ends_mid_line: bool,
}

impl LocalMessages {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("messages.jsonl");
        let mut map = HashMap::new();
        let mut index = SearchIndex::default();
        // Bytes, not a string: a crash may cut a line inside a character.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        // A line cut short by a crash is skipped; the lines before it are whole.
        for shown in bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Shown>(l).ok())
        {
            index.add(&shown);
            map.insert((shown.room.clone(), shown.seq), shown);
        }
        let ends_mid_line = bytes.last().is_some_and(|b| *b != b'\n');
        Ok(Self {
            path,
            map,
            index,
            ends_mid_line,
        })
    }

    /// Keeps decrypted messages, on disk before this returns (they cannot be decrypted again),
    /// with one flush for all of them.
    pub fn record_all(&mut self, received: &[Received]) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let shown = kept_at(received, now);
        if shown.is_empty() {
            return Ok(());
        }
        // After a line a crash cut short, start on a line of our own.
        let mut lines = if self.ends_mid_line {
            vec![b'\n']
        } else {
            Vec::new()
        };
        for s in &shown {
            serde_json::to_writer(&mut lines, s)?;
            lines.push(b'\n');
        }
        hearth_client::durable_file::append(&self.path, &lines)?;
        self.ends_mid_line = false;
        for s in shown {
            self.index.add(&s);
            self.map.insert((s.room.clone(), s.seq), s);
        }
        Ok(())
    }

    /// The messages holding every word of `query`, newest first.
    pub fn search(&self, query: &str, limit: usize) -> Vec<&Shown> {
        self.index
            .search(query, limit)
            .iter()
            .filter_map(|(room, seq)| self.get(room, *seq))
            .collect()
    }

    /// The last `limit` messages kept of `room` before `before` (all, without it), oldest
    /// first, and the `before` of the page older than them if there is one.
    pub fn page(
        &self,
        room: &RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> (Vec<&Shown>, Option<u64>) {
        let mut kept: Vec<&Shown> = self
            .map
            .values()
            .filter(|s| s.room == *room && before.is_none_or(|b| s.seq < b))
            .collect();
        kept.sort_by_key(|s| s.seq);
        let older = kept.len().saturating_sub(limit);
        let page = kept.split_off(older);
        let older = page.first().filter(|_| older > 0).map(|s| s.seq);
        (page, older)
    }

    pub fn get(&self, room: &RoomId, seq: u64) -> Option<&Shown> {
        self.map.get(&(room.clone(), seq))
    }
}

/// A read message as `sender: text` (`?` for a sender older versions did not keep).
pub fn sender_and_text(shown: &Shown) -> String {
    let sender = shown
        .sender
        .as_ref()
        .map_or("?".to_owned(), |s| s.to_string());
    format!("{sender}: {}", message_text(shown))
}

/// How a read message is printed after `sender: `.
pub fn message_text(shown: &Shown) -> String {
    if shown.copy {
        return "↻ (an earlier message, sent again for members who could not read it then)".into();
    }
    match &shown.attachment {
        Some(a) => format!(
            "{} [file {} ({} bytes): hearth-chat save-file {} {} PATH]",
            shown.text, a.name, a.size, shown.room, shown.seq
        ),
        None => shown.text.clone(),
    }
}
