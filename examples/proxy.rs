//! A caching reverse proxy: hitbox in standards mode (an RFC 9111 shared
//! cache) in front of one upstream.
//!
//! ```text
//! cargo run --release --example proxy -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080
//! cargo run --release --example proxy -- --upstream http://127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! ```
//!
//! Every method is forwarded with its body and headers; only hop-by-hop
//! headers (and those `Connection` names) are removed, and `Via` is added,
//! both ways. What is cached, and for how long, is what the upstream's
//! headers say: `Cache-Control` (or `CDN-Cache-Control` and
//! `Surrogate-Control`, which take precedence and are not passed on),
//! `Expires`, validators, `Vary`. Responses without freshness information
//! are not cached, except with a `Last-Modified` (heuristic freshness, as
//! RFC 9111 allows). Entries live in moka, with Redis behind it when
//! `--redis` is given. An upstream that cannot be reached gives `502 Bad
//! Gateway`, or the stale response where `stale-if-error` allows it.
//! Every response carries `Cache-Status`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hitbox_backend::{Cache, Compose};
use hitbox_moka::MokaBackend;
use hitbox_redis::RedisBackend;
use hitbox_tower::CacheLayer;
use hitbox_tower::headers::strip_hop_by_hop;
use hitbox_tower::rfc9111::Rfc9111;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};

const VIA: &str = "1.1 hitbox";

/// The `Via` entry for a message received in `version`.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 hitbox",
        Version::HTTP_2 => "2 hitbox",
        _ => VIA,
    })
}

struct Args {
    upstream: Uri,
    listen: SocketAddr,
    redis: Option<String>,
}

const USAGE: &str = "usage: proxy --upstream http://HOST:PORT [--listen ADDR:PORT] [--redis URL]";

fn parse_args() -> Result<Args, String> {
    let mut upstream = None;
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut redis = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => upstream = Some(value()?),
            "--listen" => listen = value()?,
            "--redis" => redis = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let upstream: Uri = upstream
        .ok_or(USAGE)?
        .parse()
        .map_err(|e| format!("--upstream: {e}"))?;
    if upstream.scheme() != Some(&Scheme::HTTP) || upstream.authority().is_none() {
        return Err("--upstream must be an http:// URL with a host".to_owned());
    }
    let listen = listen.parse().map_err(|e| format!("--listen: {e}"))?;
    Ok(Args {
        upstream,
        listen,
        redis,
    })
}

/// Forwards requests to the upstream over a pooled hyper client.
#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Body>,
    authority: Authority,
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The client queues requests in its own pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some("/".parse().expect("a path"));
        }
        parts.uri = Uri::from_parts(uri).expect("an absolute URI");
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.append(header::VIA, via(parts.version));
        // The upstream connection is this proxy's own: HTTP/1.1.
        parts.version = Version::HTTP_11;
        let client = self.client.clone();
        Box::pin(async move {
            let mut response = client.request(Request::from_parts(parts, body)).await?;
            strip_hop_by_hop(response.headers_mut());
            let received = via(response.version());
            response.headers_mut().append(header::VIA, received);
            *response.version_mut() = Version::HTTP_11;
            Ok(response)
        })
    }
}

async fn cache(redis: Option<&str>) -> Result<Cache, String> {
    let moka = MokaBackend::new(256 << 20);
    let Some(url) = redis else {
        eprintln!("proxy: cache tier moka");
        return Ok(Cache::new(moka));
    };
    let redis = RedisBackend::builder()
        .url(url)
        .key_prefix("hitbox-proxy:")
        .label("redis")
        .build()
        .map_err(|e| format!("--redis: {e}"))?;
    if let Err(error) = redis.wait_connected(Duration::from_secs(3)).await {
        eprintln!("proxy: Redis not reachable yet ({error}): moka serves alone until it is");
    }
    eprintln!("proxy: cache tiers moka + redis");
    Ok(Cache::new(moka.compose(redis)))
}

fn bad_gateway(error: &dyn std::fmt::Display) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("upstream unreachable: {error}\n")));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        "cache-status",
        HeaderValue::from_static("hitbox; fwd=miss; detail=unreachable"),
    );
    response
        .headers_mut()
        .insert(header::VIA, HeaderValue::from_static(VIA));
    response
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let cache = match cache(args.redis.as_deref()).await {
        Ok(cache) => cache,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let upstream = Upstream {
        client: Client::builder(TokioExecutor::new()).build_http(),
        authority: args.upstream.authority().expect("checked").clone(),
    };
    let config = Rfc9111::new()
        .targeted_field("cdn-cache-control")
        .targeted_field("surrogate-control");
    let cached = CacheLayer::builder(cache).rfc9111(config).build().layer(upstream);
    let service = tower::service_fn(move |request: Request<Body>| {
        let cached = cached.clone();
        async move {
            let response = match cached.oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(error) => bad_gateway(&error),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let app = axum::Router::new().fallback_service(service);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("proxy: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!("proxy: {} -> {}", args.listen, args.upstream);
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("proxy: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
