//! The OpenAPI 3.1 document of the control API, served unauthenticated at
//! `GET /api/openapi.json`.
//!
//! It is generated from the handlers themselves (`#[utoipa::path]` on each handler in
//! [`super::api`] and [`crate::connect`], `ToSchema` on their request and response types), so
//! the schemas are the types the server really serializes. What the macros cannot see is the
//! router, which mounts some handlers twice (`POST /api/tunnels` is `POST /api/tunnels/create`):
//! [`ALIASES`] adds those, and `tests/openapi.rs` checks the document against the real router
//! both ways, so neither can drift from the other.

use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, events};
use crate::connect;
use crate::error::{ErrorBody, ErrorDetail};
use crate::tcp::front_door;

/// Routes that serve the same handler as a documented one: (path, method, documented path).
pub const ALIASES: &[(&str, HttpMethod, &str)] = &[
    ("/api/tunnels", HttpMethod::Post, "/api/tunnels/create"),
    ("/api/tunnels", HttpMethod::Get, "/api/tunnels/list"),
    (
        "/api/tunnels/{id}",
        HttpMethod::Get,
        "/api/tunnels/{id}/status",
    ),
];

/// The generated part of the document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tunnel-server control API",
        description = "Create, list, inspect and delete tunnels; the endpoint tunnel clients connect to; \
                       health and readiness. These paths exist on the server's own host (TUNNEL_DOMAIN) only. \
                       Public tunnel traffic (`ANY /{tunnel_id}/...` on that host, every path of \
                       `{tunnel_id}.TUNNEL_DOMAIN` and of a verified custom domain) is proxied \
                       to the tunnel's local service and is not described here. Errors the server \
                       answers itself carry an `X-Tunnel-Error` header with the same code as the body."
    ),
    paths(
        api::health,
        api::ready,
        api::api_info,
        api::create,
        api::list,
        api::status,
        api::delete_tunnel,
        api::verify_domain,
        events::all_events,
        events::tunnel_events,
        connect::connect,
        front_door::front_door,
        openapi_json,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tunnels", description = "Tunnels of the calling API key"),
        (name = "client", description = "Where tunnel-client connects"),
        (name = "server", description = "Health, readiness and discovery"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (TUNNEL_API_KEYS) as `Authorization: Bearer KEY`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (TUNNEL_API_KEYS) as `X-API-Key: KEY`",
            ))),
        );
        components.add_security_scheme(
            "tunnel_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The tunnel's token, returned once by the create call, as `Authorization: Bearer TOKEN`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "tcp_access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A TCP tunnel's access token (`tcp.access_token` of the create call), for consumers who hold no API key",
                    ))
                    .build(),
            ),
        );
    }
}

fn operation<'a>(item: &'a mut PathItem, method: &HttpMethod) -> &'a mut Option<Operation> {
    match method {
        HttpMethod::Get => &mut item.get,
        HttpMethod::Post => &mut item.post,
        HttpMethod::Put => &mut item.put,
        HttpMethod::Delete => &mut item.delete,
        HttpMethod::Options => &mut item.options,
        HttpMethod::Head => &mut item.head,
        HttpMethod::Patch => &mut item.patch,
        HttpMethod::Trace => &mut item.trace,
    }
}

/// The whole document: the generated part plus the [`ALIASES`], each a copy of its documented
/// operation under its own `operationId` (ids must be unique).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for (alias, method, documented) in ALIASES {
        let Some(mut op) = doc
            .paths
            .paths
            .get_mut(*documented)
            .and_then(|item| operation(item, method).clone())
        else {
            // A documented path renamed without its alias: the drift test reports the alias
            // missing from the document.
            continue;
        };
        op.operation_id = op.operation_id.map(|id| format!("{id}_alias"));
        op.description = Some(format!("Same as `{documented}`."));
        let item = doc.paths.paths.entry(alias.to_string()).or_default();
        *operation(item, method) = Some(op);
    }
    doc
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorBody, TunnelError};
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_bodies_match_their_schema() {
        for e in [
            TunnelError::Unauthorized,
            TunnelError::TunnelNotFound,
            TunnelError::Conflict("x".into()),
        ] {
            let body = e
                .json_response()
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let parsed: Result<ErrorBody, _> = serde_json::from_slice(&body);
            assert!(parsed.is_ok_and(|b| b.error.code == e.code()), "{body:?}");
        }
    }

    #[test]
    fn aliases_are_in_the_document() {
        let doc = document();
        for (alias, method, _) in ALIASES {
            let mut item = doc.paths.paths.get(*alias).cloned().unwrap_or_default();
            assert!(operation(&mut item, method).is_some(), "{alias}");
        }
    }
}
