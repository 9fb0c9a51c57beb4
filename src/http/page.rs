//! The live page at `GET /`: the supervision tree (restarts, queue depths), the sinks, and
//! the twins on a map of Martinique, updated from `GET /api/v1/events` (Server-Sent Events).
//!
//! Everything the page needs is embedded in the binary: its HTML, script and style sheet
//! (`src/http/page/`), and the island's outline and communes (`twins::geo`), served as
//! GeoJSON under `/api/v1/geo/`. The page loads nothing from anywhere else; its
//! `Content-Security-Policy` says so to the browser too.

use axum::http::header;
use axum::response::IntoResponse;

pub const INDEX_HTML: &str = include_str!("page/index.html");
pub const APP_JS: &str = include_str!("page/app.js");
pub const STYLE_CSS: &str = include_str!("page/style.css");

/// Only this origin: scripts, styles, data. `data:` images for the empty favicon.
const CSP: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /`
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        INDEX_HTML,
    )
}

/// `GET /assets/app.js`
pub async fn app_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], APP_JS)
}

/// `GET /assets/style.css`
pub async fn style_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], STYLE_CSS)
}

/// `GET /api/v1/geo/outline.geojson`: the island's outline, one Feature (MultiPolygon).
pub async fn outline() -> impl IntoResponse {
    geojson(twins::geo::OUTLINE_GEOJSON)
}

/// `GET /api/v1/geo/communes.geojson`: the 34 communes, a FeatureCollection (properties
/// `code`, `nom`; `nom` is the district name used in actor paths).
pub async fn communes() -> impl IntoResponse {
    geojson(twins::geo::COMMUNES_GEOJSON)
}

fn geojson(body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/geo+json"), (header::CACHE_CONTROL, "max-age=3600")], body)
}
