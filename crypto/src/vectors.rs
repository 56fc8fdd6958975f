//! What the vector tests of this crate share: hex output, and comparing (or, with
//! `HEARTH_REGEN_VECTORS=1`, rewriting) a file of `spec/vectors/`.

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `spec/vectors/<file>` holds exactly `computed`; rewrites it first when
/// `HEARTH_REGEN_VECTORS` is set (only when the format changes on purpose).
pub fn check_file(file: &str, computed: &str) {
    let path = format!("{}/../spec/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("HEARTH_REGEN_VECTORS").is_some() {
        std::fs::write(&path, computed).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(committed, computed);
}
