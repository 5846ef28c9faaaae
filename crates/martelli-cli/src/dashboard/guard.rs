//! The checks every request passes before it reaches a handler, in this order:
//!
//! 1. **Host** (without `--auth` only): the `Host` header must be `localhost` or an IP address.
//!    A page on another site can make a browser send requests to 127.0.0.1 under its own domain
//!    name (DNS rebinding); this refuses them, since such a request names that domain.
//! 2. **Credentials** ([`Auth`](super::Auth)): a token (`Authorization: Bearer`, the cookie set by
//!    opening the page once with `?token=`), or HTTP basic auth.
//! 3. **Writes** (`POST`): refused with `--read-only`; otherwise they need the page's CSRF token in
//!    the `X-CSRF-Token` header and, when the browser says where the request comes from (`Origin`,
//!    `Sec-Fetch-Site`), that it comes from the dashboard's own page.
//!
//! Every response then gets headers that keep the page to itself: a Content-Security-Policy that
//! runs only the dashboard's own script (no inline script, no other origin), no framing, no
//! sniffing, no referrer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Auth;
use super::auth::same;
use super::server::{App, error_response};

/// The cookie that holds the access token once the page was opened with `?token=`.
pub(crate) const TOKEN_COOKIE: &str = "martelli_dashboard_token";

/// The header a write carries the CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The middleware: the checks above, then the handler, then the headers.
pub(crate) async fn check(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let mut response = match admit(&app, &request) {
        Ok(Admitted::Pass) => next.run(request).await,
        Ok(Admitted::SetCookie(token)) => token_cookie_redirect(&request, &token),
        Err(refusal) => refusal,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

enum Admitted {
    Pass,
    /// The right `?token=`: set the cookie and load the page without the token in its address.
    SetCookie(String),
}

fn admit(app: &App, request: &Request) -> Result<Admitted, Response> {
    let headers = request.headers();
    let auth = app.auth();
    if auth.is_none() && !host_is_local(headers) {
        return Err(error_response(
            StatusCode::FORBIDDEN,
            "this dashboard answers only requests addressed to localhost or an IP address (start it \
             with --auth to serve it under a host name)",
        ));
    }
    let authorization = header_str(headers, header::AUTHORIZATION);
    let cookie = cookie(headers, TOKEN_COOKIE).and_then(|v| from_hex(&v));
    let query_token = query_param(request.uri(), "token");
    if !auth.admits(authorization, cookie.as_deref(), query_token.as_deref()) {
        return Err(unauthorized(auth));
    }
    if let (Auth::Token(_), Some(token)) = (auth, query_token) {
        if request.method() == Method::GET {
            return Ok(Admitted::SetCookie(token));
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if app.read_only() {
            return Err(error_response(
                StatusCode::FORBIDDEN,
                "this dashboard runs with --read-only: dead letters cannot be requeued or discarded \
                 here",
            ));
        }
        let csrf = header_str(headers, CSRF_HEADER).unwrap_or("");
        if !same(csrf.as_bytes(), app.csrf().as_bytes()) {
            return Err(error_response(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: writes come from the dashboard's own page (reload it)",
            ));
        }
        if !same_origin(headers) {
            return Err(error_response(
                StatusCode::FORBIDDEN,
                "a write from another site's page is refused",
            ));
        }
    }
    Ok(Admitted::Pass)
}

fn unauthorized(auth: &Auth) -> Response {
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        match auth {
            Auth::Basic(_) => "this dashboard needs a user name and password",
            _ => {
                "this dashboard needs its access token: open it once as http://HOST:PORT/?token=TOKEN \
                 (the value of the environment variable named by --auth), or send \
                 Authorization: Bearer TOKEN"
            }
        },
    );
    if matches!(auth, Auth::Basic(_)) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"martelli dashboard\", charset=\"UTF-8\""),
        );
    }
    response
}

/// A redirect to the same path without its query, setting the token cookie.
fn token_cookie_redirect(request: &Request, token: &str) -> Response {
    let path = request.uri().path();
    let location = if path.starts_with('/') && !path.starts_with("//") {
        path
    } else {
        "/"
    };
    let cookie = format!(
        "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        to_hex(token)
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the `Host` header names this machine by `localhost` or by an IP address.
pub(crate) fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = header_str(headers, header::HOST) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// False when the browser says the request comes from another site's page.
fn same_origin(headers: &HeaderMap) -> bool {
    if header_str(headers, "sec-fetch-site").is_some_and(|site| site != "same-origin") {
        return false;
    }
    match (
        header_str(headers, header::ORIGIN),
        header_str(headers, header::HOST),
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The value of a cookie.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The value of a query parameter, percent-decoded.
fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    uri.query()?;
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs.0.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A secret as a cookie value can hold it: hex.
fn to_hex(secret: &str) -> String {
    secret.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A cookie value back from hex; `None` when it is not hex.
fn from_hex(value: &str) -> Option<String> {
    if value.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(value.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_local_names_and_addresses_pass_without_auth() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "10.0.0.5:80",
        ] {
            assert!(host_is_local(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1.evil.example",
            "[nope]:1",
        ] {
            assert!(!host_is_local(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(!host_is_local(&HeaderMap::new()));
    }

    #[test]
    fn writes_from_other_sites_are_told_apart() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
    }

    #[test]
    fn cookies_and_query_parameters_are_read() {
        let h = headers(&[("cookie", "a=1; martelli_dashboard_token=6162; b=2")]);
        assert_eq!(cookie(&h, TOKEN_COOKIE).as_deref(), Some("6162"));
        assert_eq!(from_hex(&to_hex("a; b=ü")).as_deref(), Some("a; b=ü"));
        assert_eq!(from_hex("zz"), None);
        let uri = "/x?x=1&token=a%2Bb".parse().unwrap();
        assert_eq!(query_param(&uri, "token").as_deref(), Some("a+b"));
        assert_eq!(query_param(&"/x".parse().unwrap(), "token"), None);
    }
}
