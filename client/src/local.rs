//! `hearth-chat`'s local store of decrypted messages. An MLS device can decrypt a message only
//! once (its keys are deleted after use), so what it read is kept here, by room and sequence
//! number, and history is shown from here. An append-only JSON-lines file, readable only by
//! its owner.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hearth_client::e2ee::Received;
use hearth_spec::RoomId;
use hearth_spec::e2ee::AttachmentRef;
use serde::{Deserialize, Serialize};

/// A message as this device read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shown {
    pub room: RoomId,
    pub seq: u64,
    pub text: String,
    #[serde(default)]
    pub attachment: Option<AttachmentRef>,
    /// A message this device had already read, sent again for members who could not read it
    /// then.
    #[serde(default)]
    pub copy: bool,
}

/// Every message this profile has read.
#[derive(Debug)]
pub struct LocalMessages {
    path: PathBuf,
    map: HashMap<(RoomId, u64), Shown>,
}

impl LocalMessages {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("messages.jsonl");
        let mut map = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            // A line cut short by a crash is skipped; the lines before it are whole.
            for shown in text
                .lines()
                .filter_map(|l| serde_json::from_str::<Shown>(l).ok())
            {
                map.insert((shown.room.clone(), shown.seq), shown);
            }
        }
        Ok(Self { path, map })
    }

    /// Keeps a decrypted message.
    pub fn record(&mut self, received: &Received) -> anyhow::Result<()> {
        let shown = match received {
            Received::Message {
                room, seq, body, ..
            } => Shown {
                room: room.clone(),
                seq: *seq,
                text: body.text.clone(),
                attachment: body.attachment.clone(),
                copy: false,
            },
            Received::Replayed { room, seq } => Shown {
                room: room.clone(),
                seq: *seq,
                text: String::new(),
                attachment: None,
                copy: true,
            },
            _ => return Ok(()),
        };
        let (room, seq) = (shown.room.clone(), shown.seq);
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&self.path)?;
        let mut line = serde_json::to_vec(&shown)?;
        line.push(b'\n');
        file.write_all(&line)?;
        self.map.insert((room, seq), shown);
        Ok(())
    }

    pub fn get(&self, room: &RoomId, seq: u64) -> Option<&Shown> {
        self.map.get(&(room.clone(), seq))
    }
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
