//! An origin for rule mode's body features, over real TCP: it records every
//! request with its whole body, and answers with what the test's function
//! makes of it (and of the call count), so a test can assert what each
//! client got, what reached the origin byte for byte, and how often.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use hitbox_backend::Cache;
use hitbox_core::ManualClock;
use hitbox_moka::MokaBackend;
use hitbox_tower::{CacheLayer, CacheLayerBuilder};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::{Got, until};

/// One request the origin received, body included.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the origin answers.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Answer {
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Answer {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(body: impl Into<Bytes>) -> Self {
        Answer::ok(body).header("content-type", "application/json")
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Answering = Arc<dyn Fn(&Received, usize) -> Answer + Send + Sync>;

/// The origin: a log of what it received, and how it answers (given the
/// request and its 1-based call number).
#[derive(Clone)]
pub struct BodyOrigin {
    log: Arc<Mutex<Vec<Received>>>,
    answer: Answering,
}

impl BodyOrigin {
    pub fn new(answer: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static) -> Self {
        BodyOrigin {
            log: Arc::default(),
            answer: Arc::new(answer),
        }
    }

    /// How many requests reached the origin.
    pub fn calls(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The `i`th request it received.
    pub fn received(&self, i: usize) -> Received {
        self.log.lock().unwrap()[i].clone()
    }

    pub fn last(&self) -> Received {
        self.log
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the origin was called")
    }

    /// An axum app of this origin, without a layer.
    pub fn app(&self) -> Router {
        Router::new().fallback(answer).with_state(self.clone())
    }
}

async fn answer(State(origin): State<BodyOrigin>, request: http::Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("the origin reads the body");
    let received = Received {
        method: parts.method.clone(),
        path: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        headers: parts.headers.clone(),
        body,
    };
    let n = {
        let mut log = origin.log.lock().unwrap();
        log.push(received.clone());
        log.len()
    };
    let reply = (origin.answer)(&received, n);
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (name, value) in reply.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

/// The origin behind a layer, served over TCP.
pub struct Site {
    pub addr: SocketAddr,
    pub origin: BodyOrigin,
    pub cache: Cache,
    pub clock: ManualClock,
}

/// `origin` behind the layer `configure` builds over a moka cache with a
/// manual clock.
pub async fn site(
    origin: BodyOrigin,
    configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
) -> Site {
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::default())
        .clock(clock.clone())
        .build();
    site_over(origin, cache, clock, configure).await
}

/// `origin` behind a layer over `cache`.
pub async fn site_over(
    origin: BodyOrigin,
    cache: Cache,
    clock: ManualClock,
    configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
) -> Site {
    let layer = configure(CacheLayer::builder(cache.clone())).build();
    let app = origin.app().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Site {
        addr,
        origin,
        cache,
        clock,
    }
}

impl Site {
    /// A request over a fresh reqwest client, which follows no redirect.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Got {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut request = client.request(method, format!("http://{}{}", self.addr, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body: Bytes = body.into();
        if !body.is_empty() {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        Got {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Got {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    /// A JSON `POST`.
    pub async fn post_json(&self, path: &str, body: &str) -> Got {
        let headers = [("content-type", "application/json")];
        self.send(Method::POST, path, &headers, body.to_owned()).await
    }

    /// Waits until `n` entries have been stored in all.
    pub async fn stores(&self, n: u64) {
        until(|| self.cache.stats().stores >= n).await;
    }
}
