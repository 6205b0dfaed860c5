//! The server's bearer token on the web: a request passes with `Authorization: Bearer <token>`
//! (scripts, curl) or with the `mops_token` cookie the login form sets (browsers). Without
//! either, a page redirects to the login form and anything else gets 401.
//!
//! The cookie never holds the token: it holds a BLAKE2b MAC of a fixed label keyed by the token
//! ([`cookie_value`]), compared in constant time, so a leaked cookie opens the dashboard but not
//! the gRPC services, and changing the token logs every browser out. It is `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, and `Secure` when the HTTP listener serves TLS or a proxy says
//! the request came over HTTPS ([`FORWARDED_PROTO`]).
//!
//! Wrong tokens, at the login form or as a bearer header, are limited per client
//! ([`crate::limit`]); cookies are not counted (a wrong cookie is a stale login, and guessing a
//! 256-bit MAC is hopeless). After a login the browser goes to `next` only if it is a path on
//! this server ([`local_path`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use http::{HeaderMap, StatusCode, header};
use maud::html;
use modelops_runtime::auth::BearerAuth;
use serde::Deserialize;

use crate::limit::{ClientKey, LoginLimiter, LoginLimits};

/// Name of the login cookie.
pub const COOKIE: &str = "mops_token";

/// The label whose MAC, keyed by the token, is the cookie's value.
const COOKIE_LABEL: &[u8] = b"modelops dashboard login cookie v1";

/// Header in which a TLS-terminating proxy says which scheme the browser used.
pub const FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Where a login goes when `next` is absent or not a path on this server.
pub const DEFAULT_NEXT: &str = "/jobs";

/// The longest `next` followed after a login; a longer one goes to [`DEFAULT_NEXT`].
pub const MAX_NEXT_LEN: usize = 2048;

/// The cookie value for `token`: BLAKE2b-256 of [`COOKIE_LABEL`], keyed by the token (first
/// hashed to BLAKE2b's 64-byte key size, as HMAC does with long keys, so any token works).
pub fn cookie_value(token: &str) -> blake2b_simd::Hash {
    let key = blake2b_simd::Params::new().hash_length(blake2b_simd::KEYBYTES).hash(token.as_bytes());
    blake2b_simd::Params::new().hash_length(32).key(key.as_bytes()).hash(COOKIE_LABEL)
}

/// The dashboard's authentication: the bearer token, the cookie derived from it, whether the
/// cookie is `Secure`, and the failed-login limiter.
#[derive(Clone)]
pub struct WebAuth {
    bearer: BearerAuth,
    cookie: Option<blake2b_simd::Hash>,
    secure_cookie: bool,
    limiter: Arc<Mutex<LoginLimiter>>,
}

impl std::fmt::Debug for WebAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebAuth")
            .field("enabled", &self.is_enabled())
            .field("secure_cookie", &self.secure_cookie)
            .finish_non_exhaustive()
    }
}

impl WebAuth {
    /// Authentication with `token` (none when `None`), the default [`LoginLimits`], and a cookie
    /// without `Secure` unless the request came through an HTTPS proxy.
    pub fn new(token: Option<String>) -> Self {
        Self {
            cookie: token.as_deref().map(cookie_value),
            bearer: BearerAuth::new(token),
            secure_cookie: false,
            limiter: Arc::new(Mutex::new(LoginLimiter::new(LoginLimits::default()))),
        }
    }

    /// This authentication with a `Secure` cookie when `secure` (the listener serves TLS).
    pub fn with_secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    /// This authentication with failed logins limited by `limits` (and none counted yet).
    pub fn with_limits(mut self, limits: LoginLimits) -> Self {
        self.limiter = Arc::new(Mutex::new(LoginLimiter::new(limits)));
        self
    }

    /// Whether a token is required.
    pub fn is_enabled(&self) -> bool {
        self.bearer.is_enabled()
    }

    /// Whether the request's login cookie is the one derived from the token.
    fn cookie_accepted(&self, headers: &HeaderMap) -> bool {
        let (Some(expected), Some(value)) = (&self.cookie, cookie_token(headers)) else {
            return false;
        };
        from_hex(value).is_some_and(|bytes| *expected == bytes[..])
    }

    /// Checks a presented token with `verify` unless `client` is over its limit, and counts it
    /// if wrong; the check and the count are one step, so concurrent attempts cannot overrun
    /// the limit. `Err` is how long the client must wait.
    fn attempt(&self, client: ClientKey, now: Instant, verify: impl FnOnce(&BearerAuth) -> bool) -> Result<bool, Duration> {
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        limiter.check(client, now)?;
        let accepted = verify(&self.bearer);
        if !accepted {
            limiter.record_failure(client, now);
        }
        Ok(accepted)
    }

    /// The login cookie's attributes for a response to a request with `headers`.
    fn cookie_attributes(&self, headers: &HeaderMap) -> &'static str {
        if self.secure_cookie || forwarded_https(headers) {
            "Path=/; HttpOnly; SameSite=Strict; Secure"
        } else {
            "Path=/; HttpOnly; SameSite=Strict"
        }
    }
}

/// Whether a TLS-terminating proxy says the request came over HTTPS (its first hop's scheme).
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get(FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The value of the request's login cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The value of one hex digit (either case).
fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Bytes of a hex string, or `None` if it is not one.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.bytes().map(hex_digit).collect::<Option<Vec<u8>>>()?;
    (digits.len() % 2 == 0).then(|| digits.chunks(2).map(|pair| (pair[0] << 4) | pair[1]).collect())
}

/// The answer to a client over its failed-login limit.
fn too_many_failures(retry_after: Duration) -> Response {
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    let message = format!("Too many wrong tokens from your address; try again in {seconds} s.");
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, seconds.to_string())],
        crate::layout::error_page(StatusCode::TOO_MANY_REQUESTS, &message),
    )
        .into_response()
}

/// Middleware: lets a request through when auth is off or it carries the token (as a bearer
/// header, limited per client) or the login cookie.
pub async fn require_token(State(auth): State<WebAuth>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !auth.is_enabled() || auth.cookie_accepted(headers) {
        return next.run(request).await;
    }
    if headers.contains_key(header::AUTHORIZATION) {
        let client = ClientKey::of(request.extensions());
        match auth.attempt(client, Instant::now(), |bearer| bearer.allows(request.uri().path(), headers)) {
            Ok(true) => return next.run(request).await,
            Ok(false) => {}
            Err(retry_after) => {
                tracing::info!(?client, "dashboard request over the failed-login limit");
                return too_many_failures(retry_after);
            }
        }
    }
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    tracing::info!(path = %request.uri().path(), "dashboard request without a valid token");
    if wants_page && request.method() == http::Method::GET {
        let next_path = request.uri().path_and_query().map_or(DEFAULT_NEXT, |p| p.as_str());
        let target = format!("/login?next={}", urlencode(next_path));
        Redirect::to(&target).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "missing or invalid bearer token").into_response()
    }
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes `%XY` escapes; anything else, a malformed escape included, stays as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digit = |at: usize| bytes.get(at).copied().and_then(hex_digit);
        match (bytes[i], digit(i + 1), digit(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high << 4) | low);
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded
}

/// Whether `path` starts with one `/` only: not `//host` nor `/\host`, which browsers read as
/// another server.
fn starts_with_one_slash(path: &[u8]) -> bool {
    path.first() == Some(&b'/') && !matches!(path.get(1), Some(b'/' | b'\\'))
}

/// Where to go after logging in: `next` if it is a path on this server, else [`DEFAULT_NEXT`].
/// A path here is printable ASCII (so always a valid `Location`), at most [`MAX_NEXT_LEN`]
/// bytes, starting with one `/`, without backslashes; and, percent-decoded (browsers drop tabs
/// and line breaks from URLs, and some decode before resolving), still starting with one `/`
/// and free of controls, whitespace and backslashes.
fn local_path(next: Option<&str>) -> &str {
    let is_local = |path: &str| {
        let decoded = percent_decode(path);
        path.len() <= MAX_NEXT_LEN
            && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
            && starts_with_one_slash(path.as_bytes())
            && starts_with_one_slash(&decoded)
            && !decoded.iter().any(|b| b.is_ascii_control() || b.is_ascii_whitespace() || *b == b'\\')
    };
    match next {
        Some(path) if is_local(path) => path,
        _ => DEFAULT_NEXT,
    }
}

/// Query of the login page.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

fn login_form(next: &str, failed: bool) -> maud::Markup {
    crate::layout::page(
        "Log in",
        "",
        html! {
            h1 { "Log in" }
            p { "This server requires its access token (the file given to " code { "--auth-token-file" } ")." }
            @if failed { p.error role="alert" { "That token is not accepted." } }
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "Token " input type="password" name="token" autocomplete="current-password" autofocus required; }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// `GET /login`.
pub async fn login_page(Query(query): Query<LoginQuery>) -> maud::Markup {
    login_form(local_path(query.next.as_deref()), false)
}

/// `POST /login`: sets the cookie when the token is right and the client is within its
/// failed-login limit (429 with `Retry-After` when it is not).
pub async fn login(State(auth): State<WebAuth>, client: ClientKey, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let next = local_path(form.next.as_deref());
    let Some(cookie) = &auth.cookie else {
        return Redirect::to(next).into_response();
    };
    match auth.attempt(client, Instant::now(), |bearer| bearer.accepts(form.token.trim())) {
        Ok(true) => {
            let cookie = format!("{COOKIE}={}; {}", cookie.to_hex(), auth.cookie_attributes(&headers));
            ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
        }
        Ok(false) => {
            tracing::info!(?client, "dashboard login with a wrong token");
            (StatusCode::UNAUTHORIZED, login_form(next, true)).into_response()
        }
        Err(retry_after) => {
            tracing::info!(?client, "dashboard login over the failed-login limit");
            too_many_failures(retry_after)
        }
    }
}

/// `GET /logout`: forgets the cookie.
pub async fn logout(State(auth): State<WebAuth>, headers: HeaderMap) -> Response {
    let cookie = format!("{COOKIE}=; {}; Max-Age=0", auth.cookie_attributes(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; mops_token=s3cret; b=2"));
        assert_eq!(cookie_token(&headers), Some("s3cret"));
        headers.insert(header::COOKIE, HeaderValue::from_static("mops_tokenx=1"));
        assert_eq!(cookie_token(&headers), None);
        assert_eq!(urlencode("/jobs/a b?x=1&y"), "/jobs/a%20b%3Fx%3D1%26y");
    }

    #[test]
    fn only_paths_on_this_server_are_followed() {
        let long = format!("/jobs/{}", "a".repeat(MAX_NEXT_LEN));
        for local in ["/jobs/x?y=1", "/jobs", "/", "/compare?best_target=targets.deaths%2Fdeaths_target", "/jobs/%C3%BC"] {
            assert_eq!(local_path(Some(local)), local);
        }
        for hostile in [
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/jobs\r\nSet-Cookie: x=1",
            "/jobs%0d%0aSet-Cookie:%20x=1",
            "/jobs\n",
            "/jobs x",
            "/jobs%20x",
            "/jobs\u{7f}",
            "/jobs/\u{fc}",
            "https://evil.example",
            "http:/evil.example",
            "javascript:alert(1)",
            "jobs",
            "",
            " /jobs",
            long.as_str(),
        ] {
            assert_eq!(local_path(Some(hostile)), DEFAULT_NEXT, "{hostile:?}");
        }
        assert_eq!(local_path(None), DEFAULT_NEXT);
    }

    #[test]
    fn percent_decoding_leaves_malformed_escapes() {
        assert_eq!(percent_decode("/a%2Fb%zz%4"), b"/a/b%zz%4");
        assert_eq!(percent_decode("%+1"), b"%+1");
        assert_eq!(percent_decode("%e2%82%ac"), "€".as_bytes());
    }

    #[test]
    fn the_cookie_is_a_mac_of_the_token_not_the_token() {
        let auth = WebAuth::new(Some("s3cret".into()));
        let value = cookie_value("s3cret").to_hex();
        assert_eq!(value.len(), 64);
        assert!(!value.contains("s3cret"));
        assert_ne!(cookie_value("s3cret"), cookie_value("s3cres"));
        let long = "x".repeat(500);
        assert_ne!(cookie_value(&long), cookie_value(&long[..499]), "long tokens are keys too");
        let with_cookie = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_str(&format!("{COOKIE}={value}")).unwrap());
            headers
        };
        assert!(auth.cookie_accepted(&with_cookie(&value)));
        assert!(auth.cookie_accepted(&with_cookie(&value.to_uppercase())));
        assert!(!auth.cookie_accepted(&with_cookie("s3cret")), "the raw token is no cookie");
        assert!(!auth.cookie_accepted(&with_cookie(&value[..62])));
        assert!(!auth.cookie_accepted(&with_cookie(&cookie_value("other").to_hex())));
        assert!(!auth.cookie_accepted(&with_cookie("")));
        assert!(!WebAuth::new(None).cookie_accepted(&with_cookie(&value)));
    }

    #[test]
    fn the_cookie_is_secure_behind_tls() {
        let mut proxied = HeaderMap::new();
        proxied.insert(FORWARDED_PROTO, HeaderValue::from_static("HTTPS, http"));
        let plain = WebAuth::new(Some("t".into()));
        assert!(!plain.cookie_attributes(&HeaderMap::new()).contains("Secure"));
        assert!(plain.cookie_attributes(&proxied).ends_with("; Secure"));
        assert!(plain.clone().with_secure_cookie(true).cookie_attributes(&HeaderMap::new()).ends_with("; Secure"));
    }
}
