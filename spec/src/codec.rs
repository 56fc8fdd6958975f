//! The one way the binary formats are decoded: postcard, the whole input, and for versioned
//! formats the version and canonical form checked.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::DecodeError;

/// Decodes exactly `bytes`: trailing bytes are an error.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest): (T, _) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
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
    if postcard::to_stdvec(&value).map_err(|e| DecodeError::Malformed(e.to_string()))? != bytes {
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
