//! An admin surface for purges: an axum [`Router`] that the application
//! mounts where it chooses, behind an authorisation hook it must supply.
//!
//! | Request | Purges |
//! |---|---|
//! | `POST /purge/url` with the URL as the body, then any request headers | the URL's entries ([`Purger::purge_url`]) |
//! | `POST /purge/tag/{tag}` | every entry tagged `tag` |
//! | `POST /purge/prefix` with the key prefix as the body | every key that starts with it |
//! | `POST /purge/namespace/{namespace}` | a rule namespace's entries |
//!
//! The body of `/purge/url` is the absolute URL on its first line, then,
//! one per line, the request headers (`Name: value`) the key is built
//! from, where a rule keys headers as well as the URL (its `Host` is the
//! URL's authority unless a line gives one):
//!
//! ```text
//! https://shop.example/prices/7
//! X-Tenant: acme
//! ```
//!
//! `?soft=1` marks entries stale instead of removing them. Answers are
//! JSON: `{"purged":3,"mode":"hard"}`, or `{"error":"…","kind":"…"}` with
//! `400` for bad input, `401`/`403` as the hook decides, `501` when a tier
//! cannot do that purge and `503` when a tier failed (`kind` is
//! [`BackendError::kind`](hitbox_backend::BackendError::kind)).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hitbox_backend::{BackendError, PurgeMode};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};

use crate::purge::{PurgeError, Purger};

/// The largest request body the admin surface reads (a URL or a prefix).
pub const MAX_ADMIN_BODY: usize = 8 * 1024;

/// What an authorisation hook answers for a request it does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or unknown ones: `401`.
    Unauthenticated,
    /// Known, but not allowed to purge: `403`.
    Forbidden,
}

type Hook = dyn Fn(&Parts) -> Result<(), Denied> + Send + Sync;

#[derive(Clone)]
struct Admin {
    purger: Purger,
    authorize: Arc<Hook>,
}

/// The purge routes over `purger`, each request first judged by
/// `authorize` (its method, URI, headers and extensions, such as axum's
/// `ConnectInfo`). There is no default hook: who may purge is the
/// application's decision.
///
/// ```
/// use axum::Router;
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_tower::CacheLayer;
/// use hitbox_tower::admin::{Denied, purge_router};
///
/// let layer = CacheLayer::new(Cache::new(MemoryBackend::new()));
/// let token = "Bearer s3cret"; // read it from the environment in practice
/// let admin = purge_router(layer.purger(), move |parts| {
///     match parts.headers.get("authorization") {
///         Some(value) if value == token => Ok(()),
///         Some(_) => Err(Denied::Forbidden),
///         None => Err(Denied::Unauthenticated),
///     }
/// });
/// let app: Router = Router::new().nest("/admin", admin);
/// ```
pub fn purge_router<F>(purger: Purger, authorize: F) -> Router
where
    F: Fn(&Parts) -> Result<(), Denied> + Send + Sync + 'static,
{
    let admin = Admin {
        purger,
        authorize: Arc::new(authorize),
    };
    Router::new()
        .route("/purge/url", post(by_url))
        .route("/purge/tag/{tag}", post(by_tag))
        .route("/purge/prefix", post(by_prefix))
        .route("/purge/namespace/{namespace}", post(by_namespace))
        .with_state(admin)
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str, kind: &str) -> Response {
    // Both are the crate's own fixed texts: nothing to escape.
    json(status, format!("{{\"error\":\"{message}\",\"kind\":\"{kind}\"}}"))
}

fn failed(error_: PurgeError) -> Response {
    let (status, kind) = match &error_ {
        PurgeError::NotCached => (StatusCode::BAD_REQUEST, "not-cached"),
        PurgeError::KeyedByBody => (StatusCode::BAD_REQUEST, "keyed-by-body"),
        PurgeError::BadHost => (StatusCode::BAD_REQUEST, "bad-host"),
        PurgeError::BadTarget => (StatusCode::BAD_REQUEST, "bad-target"),
        PurgeError::Backend(BackendError::Refused { .. }) => (StatusCode::BAD_REQUEST, "refused"),
        PurgeError::Backend(e @ BackendError::Unsupported { .. }) => (StatusCode::NOT_IMPLEMENTED, e.kind()),
        PurgeError::Backend(e) => (StatusCode::SERVICE_UNAVAILABLE, e.kind()),
    };
    let message = match &error_ {
        PurgeError::Backend(_) => "a cache tier failed; purges are idempotent, retry",
        other => match other {
            PurgeError::NotCached => "the layer does not cache this URL",
            PurgeError::KeyedByBody => "the rule for this URL keys request bodies; purge by tag or prefix",
            PurgeError::BadHost => "the URL has no usable host",
            _ => "the tag or prefix is empty, too long or not visible ASCII",
        },
    };
    error(status, message, kind)
}

/// Authorises the request, reads its mode and its body (as text).
async fn admit(admin: &Admin, request: Request<Body>) -> Result<(Parts, PurgeMode, String), Response> {
    let (parts, body) = request.into_parts();
    match (admin.authorize)(&parts) {
        Ok(()) => {}
        Err(Denied::Unauthenticated) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "authentication required",
                "unauthenticated",
            ));
        }
        Err(Denied::Forbidden) => {
            return Err(error(StatusCode::FORBIDDEN, "not allowed to purge", "forbidden"));
        }
    }
    let mode = match soft(&parts.uri) {
        Some(true) => PurgeMode::Soft,
        Some(false) => PurgeMode::Hard,
        None => return Err(error(StatusCode::BAD_REQUEST, "soft must be 0 or 1", "bad-query")),
    };
    let Ok(bytes) = to_bytes(body, MAX_ADMIN_BODY).await else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the body is too large",
            "bad-body",
        ));
    };
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8",
            "bad-body",
        ));
    };
    Ok((parts, mode, text.trim().to_owned()))
}

/// `?soft=1` or `?soft=0` (or none: hard); `None` for anything else.
fn soft(uri: &Uri) -> Option<bool> {
    let mut soft = false;
    for pair in uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair {
            "soft=1" | "soft=true" | "soft" => soft = true,
            "soft=0" | "soft=false" => soft = false,
            _ if pair.starts_with("soft=") => return None,
            _ => {}
        }
    }
    Some(soft)
}

fn answer(result: Result<u64, PurgeError>, mode: PurgeMode) -> Response {
    match result {
        Ok(purged) => {
            let mode = if mode == PurgeMode::Soft { "soft" } else { "hard" };
            json(
                StatusCode::OK,
                format!("{{\"purged\":{purged},\"mode\":\"{mode}\"}}"),
            )
        }
        Err(e) => failed(e),
    }
}

async fn by_url(State(admin): State<Admin>, request: Request<Body>) -> Response {
    let (_, mode, text) = match admit(&admin, request).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let (uri, headers) = match url_and_headers(&text) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    answer(admin.purger.purge_url(&uri, &headers, mode).await, mode)
}

/// The URL on the first line of a `/purge/url` body and the headers on the
/// lines after it (`Host` from the URL unless given).
fn url_and_headers(text: &str) -> Result<(Uri, HeaderMap), Box<Response>> {
    let mut lines = text.lines();
    let url = lines.next().unwrap_or_default().trim();
    let uri = match url.parse::<Uri>() {
        Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => uri,
        _ => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "the body must start with an absolute URL",
                "bad-url",
            )));
        }
    };
    let mut headers = HeaderMap::new();
    for line in lines.map(str::trim).filter(|line| !line.is_empty()) {
        let parsed = line.split_once(':').and_then(|(name, value)| {
            let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            let value = HeaderValue::from_str(value.trim()).ok()?;
            Some((name, value))
        });
        let Some((name, value)) = parsed else {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "a header line must be Name: value",
                "bad-header",
            )));
        };
        headers.append(name, value);
    }
    if !headers.contains_key(header::HOST)
        && let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    Ok((uri, headers))
}

async fn by_tag(State(admin): State<Admin>, Path(tag): Path<String>, request: Request<Body>) -> Response {
    let (_, mode, _) = match admit(&admin, request).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    answer(admin.purger.purge_tag(&tag, mode).await, mode)
}

async fn by_prefix(State(admin): State<Admin>, request: Request<Body>) -> Response {
    let (_, mode, text) = match admit(&admin, request).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    answer(admin.purger.purge_prefix(&text, mode).await, mode)
}

async fn by_namespace(
    State(admin): State<Admin>,
    Path(namespace): Path<String>,
    request: Request<Body>,
) -> Response {
    let (_, mode, _) = match admit(&admin, request).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    answer(admin.purger.purge_namespace(&namespace, mode).await, mode)
}
