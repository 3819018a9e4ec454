//! The chat page at `/`: a small hand-written page (HTML, CSS, vanilla JS) embedded in the
//! binary, no CDN and no network. It talks to this server's own `/v1/models` and
//! `/v1/chat/completions` (streaming), so the page itself needs no API key; the API calls do.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");
const FAVICON: &str = include_str!("web/favicon.svg");

/// Scripts and styles from this server only, no inline script, fetches to this server only:
/// a second line of defence should model text ever reach the DOM as markup.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of the page's assets (no state, no API key).
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_small_and_have_their_content_types() {
        let total = INDEX.len() + APP_JS.len() + STYLE.len() + FAVICON.len();
        assert!(
            total < 100 * 1024,
            "the page's assets grew to {total} bytes"
        );
        for (ct, body) in [
            ("text/html; charset=utf-8", INDEX),
            ("text/javascript; charset=utf-8", APP_JS),
            ("text/css; charset=utf-8", STYLE),
            ("image/svg+xml", FAVICON),
        ] {
            let r = asset(ct, body);
            assert_eq!(r.headers()[header::CONTENT_TYPE], ct);
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for body in [INDEX, APP_JS, STYLE] {
            for bad in [
                "http://",
                "https://",
                "//cdn",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                // app.js builds links from model text (checked to be http(s)), so it may name
                // the schemes in a regular expression, but never as a URL it loads.
                if body == APP_JS && bad.starts_with("http") {
                    continue;
                }
                assert!(!body.contains(bad), "{bad:?} in an asset");
            }
        }
        assert!(INDEX.contains("src=\"/app.js\"") && INDEX.contains("href=\"/style.css\""));
        assert!(
            !INDEX.contains("<script>"),
            "inline scripts are blocked by the CSP"
        );
    }
}
