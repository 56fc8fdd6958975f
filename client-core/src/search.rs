//! Search over what a device read. The hearth holds only ciphertext, so each client indexes the
//! messages it decrypted, in memory: every word of a message's text and attachment name,
//! lower-cased, maps to the messages that hold it. A query matches messages holding every one of
//! its words, each as a whole word or the start of one ("meet" finds "meeting"); results come
//! newest first.

use std::collections::{BTreeMap, BTreeSet};

use hearth_spec::RoomId;

use crate::shown::Shown;

/// Where a message is: its room and sequence number.
pub type Place = (RoomId, u64);

/// The words of `text`: runs of letters and digits, lower-cased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// An index of messages by the words they hold.
#[derive(Debug, Default)]
pub struct SearchIndex {
    postings: BTreeMap<String, BTreeSet<Place>>,
    /// When each place was kept (then when it was added), so that results come newest first
    /// across rooms.
    order: BTreeMap<Place, (u64, u64)>,
    next: u64,
}

impl SearchIndex {
    /// Indexes a message (again: a message indexed twice is found once).
    pub fn add(&mut self, shown: &Shown) {
        let place = (shown.room.clone(), shown.seq);
        if self.order.contains_key(&place) {
            return;
        }
        self.order
            .insert(place.clone(), (shown.kept_at.unwrap_or(0), self.next));
        self.next += 1;
        let name = shown.attachment.as_ref().map(|a| a.name.as_str());
        for word in words(&shown.text).chain(name.into_iter().flat_map(words)) {
            self.postings.entry(word).or_default().insert(place.clone());
        }
    }

    /// How many messages are indexed.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The messages holding every word of `query` (a word or the start of one), newest first
    /// (by when they were kept, then indexed), at most `limit`. A query without words finds
    /// nothing.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Place> {
        let mut found: Option<BTreeSet<Place>> = None;
        for word in words(query) {
            let holding: BTreeSet<Place> = self
                .postings
                .range(word.clone()..)
                .take_while(|(w, _)| w.starts_with(&word))
                .flat_map(|(_, places)| places.iter().cloned())
                .collect();
            found = Some(match found {
                None => holding,
                Some(so_far) => so_far.intersection(&holding).cloned().collect(),
            });
        }
        let mut found: Vec<Place> = found.unwrap_or_default().into_iter().collect();
        found.sort_by_key(|place| std::cmp::Reverse((self.order[place], place.1)));
        found.truncate(limit);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn shown(room: &str, seq: u64, text: &str) -> Shown {
        Shown {
            room: RoomId::parse(room).unwrap(),
            seq,
            sender: None,
            text: text.into(),
            attachment: None,
            copy: false,
            kept_at: Some(seq),
        }
    }

    fn seqs(places: Vec<Place>) -> Vec<u64> {
        places.into_iter().map(|(_, seq)| seq).collect()
    }

    #[test]
    fn every_word_must_match_as_a_word_or_its_start_newest_first() {
        let mut index = SearchIndex::default();
        index.add(&shown("!a:x", 1, "Meeting at noon, bring the PLAN"));
        index.add(&shown("!a:x", 2, "the plan changed: meet at one"));
        index.add(&shown("!b:x", 7, "Grüße aus München — plan B"));
        // Kept before the others though indexed last: found after them.
        let mut old = shown("!c:x", 9, "an old plan");
        old.kept_at = Some(0);
        index.add(&old);
        index.add(&shown("!a:x", 2, "the plan changed: meet at one"));
        assert_eq!(index.len(), 4);
        assert_eq!(seqs(index.search("plan", 10)), vec![7, 2, 1, 9]);
        assert_eq!(seqs(index.search("MEET plan", 10)), vec![2, 1]);
        assert_eq!(seqs(index.search("meeting", 10)), vec![1]);
        assert_eq!(seqs(index.search("münchen", 10)), vec![7]);
        assert_eq!(seqs(index.search("plan", 2)), vec![7, 2]);
        // Inside a word is not a match; nor is a word no message holds; nor no words at all.
        assert!(index.search("eeting", 10).is_empty());
        assert!(index.search("plan zebra", 10).is_empty());
        assert!(index.search(" ,;", 10).is_empty());
    }

    #[test]
    fn an_attachment_is_found_by_its_file_name() {
        let mut index = SearchIndex::default();
        let mut with_file = shown("!a:x", 3, "");
        with_file.attachment = Some(hearth_spec::e2ee::AttachmentRef {
            media_id: "00".into(),
            server: hearth_spec::ServerName::parse("x").unwrap(),
            key: vec![0; 32],
            nonce: vec![0; 12],
            size: 1,
            name: "Q3-budget.xlsx".into(),
        });
        index.add(&with_file);
        assert_eq!(seqs(index.search("budget", 10)), vec![3]);
    }
}
