//! The point-of-sale page (`/pos/{store}`) and the invitation landing page, served from assets
//! compiled into the binary: no outside CDN, so the page works on a network without internet.
//! The page itself is static; it reads its store from its URL and its cashier token from the URL
//! fragment (`#token=...`, never sent to a server) or the browser's storage, and calls the store
//! API with it.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const POS_HTML: &str = include_str!("../assets/pos.html");
const POS_JS: &str = include_str!("../assets/pos.js");
const POS_CSS: &str = include_str!("../assets/pos.css");
const INVITE_HTML: &str = include_str!("../assets/invite.html");

/// `GET /pos/{store}`: the page; the store is read by the page's script.
pub(crate) async fn page(Path(_store): Path<String>) -> Response {
    html(POS_HTML)
}

/// `GET /invite/{code}`: tells a person who opened an invitation link what to do with it.
pub(crate) async fn invite_page(Path(_code): Path<String>) -> Response {
    html(INVITE_HTML)
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /pos/assets/{file}`: the page's script and style.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "pos.js" => ("text/javascript; charset=utf-8", POS_JS),
        "pos.css" => ("text/css; charset=utf-8", POS_CSS),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
