//! The one way the binary formats are decoded: postcard, the whole input, and for versioned
//! formats the version and canonical form checked.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes are not a valid envelope (or other versioned binary value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("envelope is not valid postcard: {0}")]
    Malformed(#[source] postcard::Error),
    #[error("envelope has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("envelope encoding is not canonical")]
    NotCanonical,
    #[error("envelope version {0} is not supported")]
    UnsupportedVersion(u8),
}

/// Decodes exactly `bytes`: trailing bytes are an error.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest): (T, _) = postcard::take_from_bytes(bytes).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Decodes exactly `bytes`, then checks the version and that the value re-encodes to the same
/// bytes (so one value has one encoding, and one id).
pub(crate) fn decode_canonical<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    expected_version: u8,
    version: impl Fn(&T) -> u8,
) -> Result<T, DecodeError> {
    let value: T = decode_exact(bytes)?;
    if version(&value) != expected_version {
        return Err(DecodeError::UnsupportedVersion(version(&value)));
    }
    if postcard::to_stdvec(&value).map_err(DecodeError::Malformed)? != bytes {
        return Err(DecodeError::NotCanonical);
    }
    Ok(value)
}

/// `context || bytes`: what a signature covers, so that a signature made for one purpose (an
/// envelope, a record, a key proof) never passes for another.
pub(crate) fn with_context(context: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + bytes.len());
    message.extend_from_slice(context);
    message.extend_from_slice(bytes);
    message
}
