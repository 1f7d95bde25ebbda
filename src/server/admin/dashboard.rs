//! The dashboard: one page of HTML, JavaScript and CSS compiled into the binary
//! (`dashboard/`), served at `/` and `/dashboard` under the API's own authentication (the
//! route sits behind the key check in `api::handle`, so a browser without a key gets 401 with
//! `WWW-Authenticate: Basic` and asks for one).
//!
//! Invariant: the page talks only to `/api/v1` of the same origin and loads nothing else
//! (no CDN, no external fonts); the Content-Security-Policy says so to the browser too. It
//! pages sessions on the server (the API's cursors), so it holds one page at a time whatever
//! the number of sessions.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Only this origin's scripts, styles and API; never framed (its buttons delete sessions).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// The file a dashboard path names: `/`, `/dashboard`, `/dashboard/` (the page) and
/// `/dashboard/app.js`, `/dashboard/style.css`; `None` for any other path.
pub fn asset(segments: &[&str]) -> Option<(&'static str, &'static str)> {
    match segments {
        [""] | ["dashboard"] | ["dashboard", ""] => Some((INDEX, "text/html; charset=utf-8")),
        ["dashboard", "app.js"] => Some((APP, "text/javascript; charset=utf-8")),
        ["dashboard", "style.css"] => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// The reply for a dashboard path, or 404.
pub fn reply(segments: &[&str]) -> Response<Full<Bytes>> {
    let Some((body, content_type)) = asset(segments) else {
        let mut reply = Response::new(Full::new(Bytes::from_static(b"no such page\n")));
        *reply.status_mut() = StatusCode::NOT_FOUND;
        return reply;
    };
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = reply.headers_mut();
    let set = |headers: &mut hyper::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, hyper::header::CONTENT_TYPE, content_type);
    set(headers, hyper::header::CONTENT_SECURITY_POLICY, POLICY);
    set(headers, hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, hyper::header::REFERRER_POLICY, "no-referrer");
    // A new binary may bring a new page: ask again rather than run a stale script.
    set(headers, hyper::header::CACHE_CONTROL, "no-cache");
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_served_at_the_root_and_under_dashboard() {
        for path in [&[""][..], &["dashboard"], &["dashboard", ""]] {
            let (body, kind) = asset(path).unwrap();
            assert!(body.contains("/dashboard/app.js"), "{path:?}");
            assert!(kind.starts_with("text/html"));
        }
        assert!(asset(&["dashboard", "app.js"]).is_some());
        assert!(asset(&["dashboard", "style.css"]).is_some());
        assert!(asset(&["dashboard", "nothing"]).is_none());
        assert!(asset(&["index.html"]).is_none());
    }

    #[test]
    fn the_bundle_loads_nothing_from_elsewhere() {
        for (name, text) in [("index.html", INDEX), ("app.js", APP), ("style.css", STYLE)] {
            for outside in ["http://", "https://", "//fonts.", "@import"] {
                assert!(!text.contains(outside), "{name} names {outside}");
            }
        }
    }
}
