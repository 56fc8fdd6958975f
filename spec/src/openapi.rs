//! JSON schemas of the identifiers, for the client API's OpenAPI document (feature `openapi`).
//! Each pattern is the form its `parse` accepts; lengths the pattern cannot say are in the text.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::id::{DeviceId, EventId, RoomId, ServerName, TxnId, UserId};

const LABEL: &str = "[a-z0-9]([a-z0-9-]*[a-z0-9])?";

fn server_pattern() -> String {
    format!("{LABEL}(\\.{LABEL})*(:[0-9]{{1,5}})?")
}

fn string(pattern: String, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^{pattern}$")))
        .description(Some(description))
        .examples([example])
        .into()
}

macro_rules! id_schema {
    ($name:ident, $pattern:expr, $description:expr, $example:expr) => {
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string($pattern, $description, $example)
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

id_schema!(
    ServerName,
    server_pattern(),
    "A hearth's name: lower-case DNS labels, optionally `:port`; at most 255 bytes.",
    "eu.example.org"
);
id_schema!(
    UserId,
    format!("@[a-z0-9._=-]{{1,64}}:{}", server_pattern()),
    "A user: `@localpart:server`.",
    "@alice:eu.example.org"
);
id_schema!(
    RoomId,
    format!("![A-Za-z0-9_-]{{1,64}}:{}", server_pattern()),
    "A room: `!opaque:home`; the home hearth orders its events.",
    "!q3JwzYxLw0Qp:eu.example.org"
);
id_schema!(
    DeviceId,
    "[A-Za-z0-9_-]{1,32}".to_owned(),
    "A device of a user, assigned by the hearth at login.",
    "K7PX2QHD"
);
id_schema!(
    TxnId,
    "[A-Za-z0-9._~-]{1,64}".to_owned(),
    "A client-chosen transaction id, unique per device; a retried send reuses it.",
    "m1733130000000.0"
);
id_schema!(
    EventId,
    "\\$[A-Za-z0-9_-]{43}".to_owned(),
    "An event id: `$` and the unpadded base64url SHA-256 of the encoded envelope.",
    "$8sJb2Vq1l9cQ2rX0m1yZ4oT6aW3eP5uN7kH0fD9gL2c"
);

/// The schema of a `#[serde(with = "crate::b64")]` field: standard padded base64 text.
pub fn base64() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .content_encoding("base64")
        .format(None::<SchemaFormat>)
        .into()
}

/// A list of base64 byte strings (`crate::b64::list`).
pub fn base64_list() -> RefOr<Schema> {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(base64())
        .into()
}

/// A base64 byte string or null (`crate::b64::option`).
pub fn base64_option() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .content_encoding("base64")
        .into()
}
