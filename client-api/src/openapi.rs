//! The client API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the wire types' schemas, served at `/v1/openapi.json`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use hearth_spec::ErrorBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hearth client API",
        description = "What clients speak to their own hearth over HTTP. The WebSocket frames \
                       and the semantics are in spec/client-protocol.md; every error is an \
                       `ErrorBody` with the status its code maps to.",
        license(name = "See the repository")
    ),
    paths(
        crate::routes::health,
        crate::routes::ready,
        crate::routes::limits,
        crate::routes::register,
        crate::routes::login,
        crate::routes::refresh,
        crate::routes::logout,
        crate::routes::devices,
        crate::routes::delete_device,
        crate::routes::rooms,
        crate::routes::create_room,
        crate::routes::room,
        crate::routes::invite,
        crate::routes::remove,
        crate::routes::set_admin,
        crate::routes::leave,
        crate::routes::mark_read,
        crate::routes::send,
        crate::routes::history,
        crate::routes::receipts,
        crate::routes::typing,
        crate::routes::sync,
        crate::ws::upgrade,
        crate::routes::presence,
        crate::routes::presence_settings,
        crate::routes::pusher,
        crate::routes::set_pusher,
        crate::routes::delete_pusher,
        crate::routes::vapid,
        crate::e2ee::upload,
        crate::e2ee::count,
        crate::e2ee::claim,
        crate::e2ee::claim_many,
        crate::e2ee::query,
        crate::e2ee::devices,
        crate::e2ee::commit,
        crate::e2ee::upload_media,
        crate::e2ee::download,
        crate::notices::notices,
        crate::notices::read,
        crate::admin::users,
        crate::admin::create_user,
        crate::admin::show_user,
        crate::admin::deactivate_user,
        crate::admin::reactivate_user,
        crate::admin::password,
        crate::admin::logout_user,
        crate::admin::set_admin,
        crate::admin::list_media,
        crate::admin::tokens,
        crate::admin::create_token,
        crate::admin::delete_token,
        crate::admin::rooms,
        crate::admin::room_members,
        crate::admin::set_retention,
        crate::admin::purge_history,
        crate::admin::erase_user,
        crate::admin::shutdown_room,
        crate::admin::quarantine_media,
        crate::admin::delete_media,
        crate::admin::notice_everyone,
        crate::admin::notice_user,
        crate::admin::federation,
        crate::admin::blocked_hearths,
        crate::admin::block_hearth,
        crate::admin::unblock_hearth,
        crate::admin::audit,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions)
)]
struct ApiDoc;

/// What every operation shares, said once: the bearer scheme, and that any status an operation
/// does not list is an error with an [`ErrorBody`].
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The access token of /v1/login, /v1/register or /v1/refresh.",
                    ))
                    .build(),
            ),
        );
        let error = ResponseBuilder::new()
            .description(
                "An error: the status is the one its `code` maps to (spec/client-protocol.md).",
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .entry("default".to_owned())
                    .or_insert_with(|| error.clone().into());
            }
        }
    }
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}
