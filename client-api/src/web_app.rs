//! The web app (`web/`), built into the binary from `web/dist/` and served at `/`: the page,
//! its script, its style, the wasm device and the service worker for notifications. The script and the wasm go gzipped (compressed by
//! `web/build`) to browsers that accept it. Revalidated on every load (`no-cache` with an ETag
//! per encoding), so a new hearth version reaches open browsers on their next reload, and
//! locked down by a content security policy: scripts, styles, connections and the wasm come
//! from this hearth only.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One file of the app.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// The same, gzipped.
    gzipped: Option<&'static [u8]>,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../web/dist/index.html"),
        gzipped: None,
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/app.js"),
        gzipped: Some(include_bytes!("../../web/dist/app.js.gz")),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/dist/style.css"),
        gzipped: None,
    },
    // The service worker that shows Web Push notifications while no tab is open. Served from
    // the root so its scope is the whole app.
    Asset {
        path: "/sw.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/sw.js"),
        gzipped: None,
    },
    Asset {
        path: "/hearth_web_bg.wasm",
        content_type: "application/wasm",
        bytes: include_bytes!("../../web/dist/hearth_web_bg.wasm"),
        gzipped: Some(include_bytes!("../../web/dist/hearth_web_bg.wasm.gz")),
    },
];

/// `'wasm-unsafe-eval'` lets the page compile its WebAssembly and nothing else; no inline
/// script or style, no other origin.
const POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The routes of the app's files (merged into the client API's router).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    router.route(
        "/index.html",
        get(|headers: HeaderMap| async move { serve(0, &headers) }),
    )
}

/// A strong tag per asset and encoding: the first 12 bytes of the SHA-256 of what is sent.
fn etag(index: usize, gzipped: bool) -> &'static str {
    static TAGS: OnceLock<Vec<[String; 2]>> = OnceLock::new();
    let tag = |bytes: &[u8]| {
        let hex: String = Sha256::digest(bytes)[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("\"{hex}\"")
    };
    &TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| [tag(a.bytes), tag(a.gzipped.unwrap_or(a.bytes))])
            .collect()
    })[index][usize::from(gzipped)]
}

/// Whether the request accepts gzip (`Accept-Encoding`, without `gzip;q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("gzip"))
                && parts.all(|p| p.replace(' ', "") != "q=0")
        })
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let gzipped = asset.gzipped.filter(|_| accepts_gzip(headers));
    let tag = etag(index, gzipped.is_some());
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = gzipped.unwrap_or(asset.bytes).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if gzipped.is_some() {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let h = response.headers_mut();
    if asset.gzipped.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
