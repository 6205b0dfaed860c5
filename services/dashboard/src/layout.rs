//! The page frame shared by every page (navigation, stylesheet, script), the pieces pages repeat
//! (status badges, progress bars, times), and the security headers every response carries.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use modelops_core::job::JobState;

/// A whole page: `title`, the navigation with `active` marked, and `body`.
pub fn page(title: &str, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ModelOps" }
                link rel="icon" type="image/svg+xml" href=(crate::assets::path("favicon.svg"));
                link rel="stylesheet" href=(crate::assets::path("dashboard.css"));
                script src=(crate::assets::path("dashboard.js")) defer {}
            }
            body {
                header.top {
                    a.brand href="/jobs" { "ModelOps" }
                    nav {
                        a href="/jobs" class=[(active == "jobs").then_some("active")] { "Jobs" }
                        a href="/history" class=[(active == "history").then_some("active")] { "History" }
                        a href="/compare" class=[(active == "compare").then_some("active")] { "Compare" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The page shown for a failed request.
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    page(
        status.canonical_reason().unwrap_or("Error"),
        "",
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error { (message) }
            p { a href="/jobs" { "Back to the jobs" } }
        },
    )
}

/// A status badge whose class the stylesheet colours.
pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "status status-" (status) } data-field="status" { (status) } }
}

/// A progress bar with "completed / total" (an empty bar when the total is unknown).
pub fn progress(completed: i64, total: i64) -> Markup {
    let percent = if total > 0 { (completed as f64 / total as f64 * 100.0).clamp(0.0, 100.0) } else { 0.0 };
    html! {
        span.progress data-field="progress" {
            progress max="100" value=(format!("{percent:.1}")) {}
            span.count { (completed) " / " (total) }
        }
    }
}

/// A timestamp the script keeps relative ("3 min ago"); the exact time is its tooltip.
pub fn time(iso: &str, field: &str) -> Markup {
    html! { time datetime=(iso) title=(iso) data-field=(field) { (iso) } }
}

/// The job's error message, if any.
pub fn job_error(state: &JobState) -> Option<&str> {
    state.get_str("error_message").filter(|e| !e.is_empty())
}

/// A float for tables: short but exact enough to tell losses apart.
pub fn number(value: f64) -> String {
    if value == 0.0 || (1e-3..1e6).contains(&value.abs()) {
        format!("{value:.6}").trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{value:.4e}")
    }
}

/// Trusted SVG from the plotting library (its text is escaped by the library).
pub fn svg(markup: &str) -> PreEscaped<&str> {
    PreEscaped(markup)
}

/// Adds a strict Content-Security-Policy (own scripts and styles only; plots are inline SVG)
/// and the usual hardening headers to every dashboard response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}
