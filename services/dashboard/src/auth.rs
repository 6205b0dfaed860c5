//! The server's bearer token on the web: a request passes with `Authorization: Bearer <token>`
//! (scripts, curl) or with the `mops_token` cookie the login form sets (browsers). Without
//! either, a page redirects to the login form and anything else gets 401.

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::html;
use modelops_runtime::auth::BearerAuth;
use serde::Deserialize;

/// Name of the login cookie.
pub const COOKIE: &str = "mops_token";

/// The token a request carries in its login cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Middleware: lets a request through when auth is off or it carries the token.
pub async fn require_token(State(auth): State<BearerAuth>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let passes = auth.allows(request.uri().path(), headers) || cookie_token(headers).is_some_and(|t| auth.accepts(t));
    if passes {
        return next.run(request).await;
    }
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    tracing::info!(path = %request.uri().path(), "dashboard request without a valid token");
    if wants_page && request.method() == http::Method::GET {
        let next_path = request.uri().path_and_query().map_or("/jobs", |p| p.as_str());
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

/// Where to go after logging in: a path on this server only (never `//host` or a URL).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path,
        _ => "/jobs",
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

/// `POST /login`: sets the cookie when the token is right.
pub async fn login(State(auth): State<BearerAuth>, Form(form): Form<LoginForm>) -> Response {
    let next = local_path(form.next.as_deref()).to_owned();
    if !auth.is_enabled() {
        return Redirect::to(&next).into_response();
    }
    if !auth.accepts(form.token.trim()) {
        tracing::info!("dashboard login with a wrong token");
        return (StatusCode::UNAUTHORIZED, login_form(&next, true)).into_response();
    }
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", form.token.trim());
    match HeaderValue::from_str(&cookie) {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response(),
        // A token that cannot be a header value cannot have matched either.
        Err(_) => (StatusCode::UNAUTHORIZED, login_form(&next, true)).into_response(),
    }
}

/// `GET /logout`: forgets the cookie.
pub async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_redirect_targets() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; mops_token=s3cret; b=2"));
        assert_eq!(cookie_token(&headers), Some("s3cret"));
        headers.insert(header::COOKIE, HeaderValue::from_static("mops_tokenx=1"));
        assert_eq!(cookie_token(&headers), None);
        assert_eq!(local_path(Some("/jobs/x?y=1")), "/jobs/x?y=1");
        assert_eq!(local_path(Some("//evil.example")), "/jobs");
        assert_eq!(local_path(Some("https://evil.example")), "/jobs");
        assert_eq!(local_path(Some("/\\evil.example")), "/jobs");
        assert_eq!(urlencode("/jobs/a b?x=1&y"), "/jobs/a%20b%3Fx%3D1%26y");
    }
}
