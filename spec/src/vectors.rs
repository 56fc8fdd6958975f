//! Checks the committed test vectors in `spec/vectors/` byte for byte.
//! Regenerate (only when the format changes on purpose) with `HEARTH_REGEN_VECTORS=1 cargo test -p hearth-spec`.

#[cfg(test)]
mod tests {
    use crate::envelope::ENVELOPE_VERSION;
    use crate::{Content, DeviceId, Envelope, Membership, RoomId, RoomKind, TxnId, UserId};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Vector {
        description: String,
        envelope: serde_json::Value,
        encoded_hex: String,
        event_id: String,
    }

    fn envelope(content: Content) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            room_id: RoomId::parse("!a1B2c3:eu.example.org").unwrap(),
            sender: UserId::parse("@alice:eu.example.org").unwrap(),
            sender_device: DeviceId::parse("ABCDEFGHIJ").unwrap(),
            txn_id: TxnId::parse("txn-1").unwrap(),
            origin_ts: 1_795_000_000_000,
            content,
        }
    }

    fn samples() -> Vec<(&'static str, Envelope)> {
        vec![
            (
                "create a group",
                envelope(Content::Create {
                    kind: RoomKind::Group,
                    name: Some("Team".into()),
                }),
            ),
            (
                "create a direct chat",
                envelope(Content::Create {
                    kind: RoomKind::Direct,
                    name: None,
                }),
            ),
            (
                "bob joins",
                envelope(Content::Member {
                    target: UserId::parse("@bob:eu.example.org").unwrap(),
                    membership: Membership::Join,
                }),
            ),
            (
                "bob leaves",
                envelope(Content::Member {
                    target: UserId::parse("@bob:eu.example.org").unwrap(),
                    membership: Membership::Leave,
                }),
            ),
            (
                "a message",
                envelope(Content::Message {
                    payload: b"hello, world".to_vec(),
                }),
            ),
            (
                "an empty message",
                envelope(Content::Message {
                    payload: Vec::new(),
                }),
            ),
            (
                "an MLS commit with its welcome",
                envelope(Content::Commit {
                    epoch: 3,
                    commit: b"commit".to_vec(),
                    welcome: Some(b"welcome".to_vec()),
                }),
            ),
            (
                "an MLS commit without a welcome",
                envelope(Content::Commit {
                    epoch: 300,
                    commit: vec![0, 1, 2],
                    welcome: None,
                }),
            ),
            (
                "a purged message's place (made by a hearth, never sent by a client)",
                envelope(Content::Purged {}),
            ),
            (
                "bob is made an admin",
                envelope(Content::Admin {
                    target: UserId::parse("@bob:eu.example.org").unwrap(),
                    admin: true,
                }),
            ),
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn envelope_vectors_match_byte_for_byte() {
        let computed: Vec<Vector> = samples()
            .into_iter()
            .map(|(description, env)| Vector {
                description: description.into(),
                envelope: serde_json::to_value(&env).unwrap(),
                encoded_hex: hex(&env.encode()),
                event_id: env.event_id().to_string(),
            })
            .collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/envelope.json");
        if std::env::var_os("HEARTH_REGEN_VECTORS").is_some() {
            std::fs::write(
                path,
                serde_json::to_string_pretty(&computed).unwrap() + "\n",
            )
            .unwrap();
        }
        let committed: Vec<Vector> =
            serde_json::from_str(include_str!("../vectors/envelope.json")).unwrap();
        assert_eq!(committed, computed);
        for v in &committed {
            let bytes: Vec<u8> = (0..v.encoded_hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v.encoded_hex[i..i + 2], 16).unwrap())
                .collect();
            let decoded = Envelope::decode(&bytes).unwrap();
            assert_eq!(serde_json::to_value(&decoded).unwrap(), v.envelope);
        }
    }
}
