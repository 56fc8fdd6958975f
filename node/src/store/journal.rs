//! The commit journal: what makes a group commit durable, so that the database need not be
//! flushed for each one.
//!
//! A group commit appends its batch here as one record and flushes the file (`fdatasync`, the
//! appended bytes and the file's new length) before the batch is committed to the database
//! without redb's flush (`Durability::None`: readers see it at once, the disk later). A
//! checkpoint, a flushed database commit, makes everything applied so far durable in the database
//! itself, after which the journal is rewound: the next record is written over the first, so the
//! file keeps its length and a flush sends the disk the record alone, not the file's new size.
//! On open, the records the database does not hold yet are applied again. `spec/storage.md` ("The commit journal") has the format and the proof.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The first bytes of a journal: names the format of its records (a [`super::Batch`] in
/// postcard), so a binary that cannot read them refuses instead of guessing.
const MAGIC: &[u8; 8] = b"HJRNL\x00\x00\x01";
/// Magic and the id of the database the journal belongs to.
const HEADER: u64 = 16;
/// Before each record's body: its length (u32), CRC-32 of number and body (u32), number (u64).
const RECORD_HEAD: usize = 16;
/// A record longer than this is damage, not a batch (a batch of 4096 requests is a few MB).
const MAX_RECORD: usize = 256 * 1024 * 1024;
/// The size of each write of [`Journal::write_ahead`]'s zeros: a page.
const AHEAD_BLOCK: usize = 4096;

/// One group commit's batch, as appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub number: u64,
    pub body: Vec<u8>,
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal {0} belongs to another database (its id differs); it may hold acknowledged messages of that database: move it away only if that database is gone"
    )]
    Foreign(String),
    #[error("journal {0} is not a journal this version of hearth can read")]
    Format(String),
}

/// The open journal: whole records from the start, appended at the end.
#[derive(Debug)]
pub struct Journal {
    file: File,
    /// Bytes of the header and the whole records.
    len: u64,
    /// The number the next record gets.
    next: u64,
}

impl Journal {
    /// Opens (or creates) the journal of the database whose id is `id`, and reads its records:
    /// the run from the start that are whole and numbered one after another. What follows is a
    /// torn record (a crash during its append, so never acknowledged) or the rest of an earlier
    /// run, and the next append writes over it.
    pub fn open(path: &Path, id: u64) -> Result<(Journal, Vec<Record>), JournalError> {
        let failed = |source| JournalError::Io {
            path: path.display().to_string(),
            source,
        };
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(failed)?;
        if (bytes.len() as u64) < HEADER {
            // New, or torn while it was being created (no record can follow a torn header).
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&id.to_le_bytes());
            file.set_len(0).map_err(failed)?;
            file.write_all_at(&header, 0).map_err(failed)?;
            file.sync_all().map_err(failed)?;
            if !existed {
                crate::ops::data_dir::sync_parent(path).map_err(failed)?;
            }
            let journal = Journal {
                file,
                len: HEADER,
                next: 1,
            };
            return Ok((journal, Vec::new()));
        }
        if &bytes[..8] != MAGIC {
            return Err(JournalError::Format(path.display().to_string()));
        }
        if bytes[8..16] != id.to_le_bytes() {
            return Err(JournalError::Foreign(path.display().to_string()));
        }
        let (records, whole) = parse(&bytes[HEADER as usize..]);
        let len = HEADER + whole as u64;
        if len < bytes.len() as u64 {
            tracing::debug!(
                path = %path.display(),
                past = bytes.len() as u64 - len,
                "bytes after the journal's records (an earlier run, or a record torn by a crash) will be written over"
            );
        }
        let next = records.last().map_or(1, |r| r.number + 1);
        Ok((Journal { file, len, next }, records))
    }

    /// Bytes of the header and the records.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The number the next record gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Appends `body` as the next record and flushes it: once this returns Ok, the record
    /// survives a crash. On an error the journal is cut back to what it held before if it can
    /// be; if not, the record may still be there.
    pub fn append(&mut self, body: &[u8]) -> io::Result<u64> {
        let len_before = self.len;
        let number = self.write(body)?;
        if let Err(e) = self.flush() {
            let _ = self.cut_to(len_before);
            self.len = len_before;
            self.next = number;
            return Err(e);
        }
        Ok(number)
    }

    /// Appends `body` as the next record without flushing it ([`Self::flush`] does): a crash
    /// of the process keeps it, one of the machine may not. On an error the journal is cut back
    /// to what it held before if it can be; if not, the record may still be there.
    pub fn write(&mut self, body: &[u8]) -> io::Result<u64> {
        let number = self.next;
        let mut record = Vec::with_capacity(RECORD_HEAD + body.len());
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(number, body).to_le_bytes());
        record.extend_from_slice(&number.to_le_bytes());
        record.extend_from_slice(body);
        if let Err(e) = self.file.write_all_at(&record, self.len) {
            let _ = self.cut_to(self.len);
            return Err(e);
        }
        self.len += record.len() as u64;
        self.next += 1;
        Ok(number)
    }

    /// Makes every record written so far durable (`fdatasync`: the bytes and the new length).
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Takes the last record back (its batch could not be applied): Ok once it is gone for good.
    pub fn take_back(&mut self, number: u64, len_before: u64) -> io::Result<()> {
        debug_assert_eq!(number + 1, self.next);
        self.cut_to(len_before)?;
        self.len = len_before;
        self.next = number;
        Ok(())
    }

    /// Makes the file at least `bytes` long by writing zeros past its end, then flushes it. A
    /// record written over blocks the file already has is flushed with its own block alone,
    /// where one that grows the file also makes the disk write the inode's new length: on this
    /// VM's ext4 4.7 KB reach the device per one-block record instead of 8.7 KB, and the flush
    /// returns sooner (`spec/storage.md`, "The commit journal"). A hearth that has checkpointed
    /// once overwrites anyway; this makes a new one do so from its first message. Zeros end the
    /// records when read (a zero head fails its checksum). Returns the bytes written.
    pub fn write_ahead(&mut self, bytes: u64) -> io::Result<u64> {
        let start = self.file.metadata()?.len();
        let mut end = start;
        // Page-sized writes: the kernel's count of a process's written bytes takes a page-cache
        // folio whole whenever a record dirties any of it, and one large write of zeros would
        // leave large folios behind.
        let zeros = [0u8; AHEAD_BLOCK];
        while end < bytes {
            let n = (AHEAD_BLOCK as u64 - end % AHEAD_BLOCK as u64).min(bytes - end);
            self.file.write_all_at(&zeros[..n as usize], end)?;
            end += n;
        }
        if end > start {
            self.file.sync_all()?;
        }
        Ok(end - start)
    }

    /// Rewinds the journal once the database holds everything in it durably; numbering goes on.
    /// Nothing is cut: the next record is written over the first, and reading stops at the first
    /// record not numbered one after the one before it, which every record of an earlier run is
    /// (numbers only grow). Overwriting keeps the file's length, so `fdatasync` need not write
    /// the inode: about 5.4 KB reach the disk per one-block record instead of 9.4 KB.
    pub fn restart(&mut self) {
        self.len = HEADER;
    }

    /// Numbers the next record `next` (after a recovery: the one after what the database holds).
    pub fn continue_at(&mut self, next: u64) {
        self.next = next;
    }

    fn cut_to(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()
    }
}

/// The whole records numbered one after another at the start of `bytes` (after the header), and
/// how many bytes they take.
fn parse(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + RECORD_HEAD) {
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let number = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if len > MAX_RECORD {
            break;
        }
        let Some(body) = bytes.get(at + RECORD_HEAD..at + RECORD_HEAD + len) else {
            break;
        };
        if checksum(number, body) != sum {
            break;
        }
        if records
            .last()
            .is_some_and(|last: &Record| last.number + 1 != number)
        {
            // A record of an earlier run, left behind by a rewind.
            break;
        }
        records.push(Record {
            number,
            body: body.to_vec(),
        });
        at += RECORD_HEAD + len;
    }
    (records, at)
}

fn checksum(number: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&number.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen() {
        let dir = dir();
        let path = dir.path().join("journal");
        let (mut journal, records) = Journal::open(&path, 7).unwrap();
        assert!(records.is_empty());
        assert_eq!(journal.append(b"one").unwrap(), 1);
        assert_eq!(journal.append(b"").unwrap(), 2);
        assert_eq!(journal.append(&[9; 5000]).unwrap(), 3);
        drop(journal);
        let (journal, records) = Journal::open(&path, 7).unwrap();
        let bodies: Vec<_> = records.iter().map(|r| (r.number, r.body.len())).collect();
        assert_eq!(bodies, [(1, 3), (2, 0), (3, 5000)]);
        assert_eq!(journal.next(), 4);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_its_number_given_again() {
        let dir = dir();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path, 7).unwrap();
        journal.append(b"kept").unwrap();
        journal.append(b"torn record").unwrap();
        let full = journal.len();
        drop(journal);
        for cut in 1..(RECORD_HEAD as u64 + 11) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(full - cut)
                .unwrap();
            let (mut journal, records) = Journal::open(&path, 7).unwrap();
            assert_eq!(records.len(), 1, "cut {cut}");
            assert_eq!(records[0].body, b"kept");
            assert_eq!(journal.append(b"torn record").unwrap(), 2);
            assert_eq!(journal.len(), full);
        }
    }

    #[test]
    fn a_damaged_record_ends_the_journal_there() {
        let dir = dir();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path, 7).unwrap();
        journal.append(b"first").unwrap();
        journal.append(b"second").unwrap();
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (mut journal, records) = Journal::open(&path, 7).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(journal.len(), HEADER + 16 + 5);
        // The damaged record is written over.
        assert_eq!(journal.append(b"again").unwrap(), 2);
        drop(journal);
        let (_, records) = Journal::open(&path, 7).unwrap();
        let bodies: Vec<_> = records.iter().map(|r| r.body.as_slice()).collect();
        assert_eq!(bodies, [&b"first"[..], &b"again"[..]]);
    }

    #[test]
    fn another_databases_journal_or_an_unknown_format_is_refused() {
        let dir = dir();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path, 7).unwrap();
        journal.append(b"acknowledged").unwrap();
        drop(journal);
        assert!(matches!(
            Journal::open(&path, 8),
            Err(JournalError::Foreign(_))
        ));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[7] = 2;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Journal::open(&path, 7),
            Err(JournalError::Format(_))
        ));
    }

    #[test]
    fn a_restarted_journal_is_empty_and_numbering_goes_on() {
        let dir = dir();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path, 7).unwrap();
        journal.append(b"a").unwrap();
        journal.append(b"b").unwrap();
        journal.restart();
        assert_eq!(journal.len(), HEADER);
        assert_eq!(journal.append(b"c").unwrap(), 3);
        let len_before = journal.len();
        assert_eq!(journal.append(b"d").unwrap(), 4);
        journal.take_back(4, len_before).unwrap();
        drop(journal);
        let (journal, records) = Journal::open(&path, 7).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].number, records[0].body.as_slice()),
            (3, &b"c"[..])
        );
        assert_eq!(journal.next(), 4);
    }

    /// Records of the same length line up with the earlier run's, whose records are whole and
    /// pass their checksums: only their numbers tell them apart.
    #[test]
    fn a_rewound_journal_reads_only_its_new_records_and_does_not_grow() {
        let dir = dir();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path, 7).unwrap();
        for body in [b"one", b"two", b"six", b"ten"] {
            journal.append(body).unwrap();
        }
        let size = std::fs::metadata(&path).unwrap().len();
        journal.restart();
        assert_eq!(journal.append(b"new").unwrap(), 5);
        assert_eq!(journal.append(b"end").unwrap(), 6);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        drop(journal);
        let (mut journal, records) = Journal::open(&path, 7).unwrap();
        let read: Vec<_> = records
            .iter()
            .map(|r| (r.number, r.body.as_slice()))
            .collect();
        assert_eq!(read, [(5, &b"new"[..]), (6, &b"end"[..])]);
        assert_eq!(journal.next(), 7);
        // Rewound with nothing after it: the earlier run reads back, and the database, which
        // holds all of it, skips it (`Store::recover`).
        journal.restart();
        drop(journal);
        let (journal, records) = Journal::open(&path, 7).unwrap();
        let numbers: Vec<_> = records.iter().map(|r| r.number).collect();
        assert_eq!(numbers, [5, 6]);
        assert_eq!(journal.next(), 7);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    }

    /// Written ahead, the file keeps its length while records fill it; the zeros after the last
    /// record end the journal when it is read again, and a record past them grows the file.
    #[test]
    fn a_journal_written_ahead_keeps_its_length_and_reads_back_only_its_records() {
        let dir = dir();
        let path = dir.path().join("journal");
        let ahead = 64 * 1024;
        // Zeros alone are no record, not even the first.
        let (mut journal, _) = Journal::open(&path, 7).unwrap();
        assert_eq!(journal.write_ahead(ahead).unwrap(), ahead - HEADER);
        drop(journal);
        let (mut journal, records) = Journal::open(&path, 7).unwrap();
        assert!(records.is_empty());
        assert_eq!((journal.len(), journal.next()), (HEADER, 1));
        journal.append(b"before").unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        assert_eq!(size(), ahead);
        assert_eq!(journal.write_ahead(ahead).unwrap(), 0);
        assert_eq!(size(), ahead);
        for body in [&b"one"[..], &[5; 3000], b"three"] {
            journal.append(body).unwrap();
        }
        assert_eq!(size(), ahead);
        // Never shorter, and nothing to write when long enough.
        assert_eq!(journal.write_ahead(1024).unwrap(), 0);
        assert_eq!(size(), ahead);
        let len = journal.len();
        drop(journal);
        let (mut journal, records) = Journal::open(&path, 7).unwrap();
        let bodies: Vec<_> = records.iter().map(|r| (r.number, r.body.len())).collect();
        assert_eq!(bodies, [(1, 6), (2, 3), (3, 3000), (4, 5)]);
        assert_eq!((journal.len(), journal.next()), (len, 5));
        journal.append(&vec![1; ahead as usize]).unwrap();
        assert_eq!(size(), len + RECORD_HEAD as u64 + ahead);
    }
}
