//! What every Client-Server request goes through on its way to its route: it is timed and counted
//! for the metrics, its answer carries the CORS headers, and a request that may change something
//! runs to its end even when its client hangs up.
//!
//! One tower layer with its own future, rather than `middleware::from_fn`s and tower-http's CORS:
//! each of those holds per request state of its own (a boxed future of about 1 KiB for each
//! `from_fn`, a header map for CORS), and an idle long-poll holds all of it for its whole wait
//! (BENCHMARKS.md, idle connections). This future holds the route's future inline, plus what the
//! metrics need; the CORS headers are the same for every answer.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{header, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tower::{Layer, Service};

use super::metrics::Metrics;
use crate::error::Error;

#[derive(Clone)]
pub struct RequestLayer {
    metrics: Arc<Metrics>,
}

impl RequestLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for RequestService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let timer = RequestTimer {
            started: Instant::now(),
            method: request.method().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
            metrics: self.metrics.clone(),
        };
        let answer = if request.method() == Method::OPTIONS {
            // spec: "Web Browser Clients": every endpoint takes OPTIONS, and the server must not
            // run the endpoint's logic for it.
            Answer::Preflight
        } else if matches!(*request.method(), Method::GET | Method::HEAD) {
            // Reads (a long-poll above all) end with their connection.
            Answer::Inline { future: self.inner.call(request) }
        } else {
            // hyper drops the request's future when the connection closes, and a write dropped
            // halfway leaves what it began behind. On PostgreSQL an event's position reserved but
            // never stored holds back every sync, in every process, until the reservation is
            // dropped as stale; an event stored but never announced reaches its room's members
            // only with the room's next event.
            Answer::Spawned { task: tokio::spawn(self.inner.call(request)) }
        };
        RequestFuture { answer, timer }
    }
}

pin_project! {
    pub struct RequestFuture<F> {
        #[pin]
        answer: Answer<F>,
        timer: RequestTimer,
    }
}

pin_project! {
    #[project = AnswerProjection]
    enum Answer<F> {
        Inline { #[pin] future: F },
        Spawned { task: JoinHandle<Result<Response, Infallible>> },
        Preflight,
    }
}

impl<F> Future for RequestFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.answer.project() {
            AnswerProjection::Inline { future } => match ready!(future.poll(cx)) {
                Ok(response) => response,
            },
            AnswerProjection::Spawned { task } => match ready!(Pin::new(task).poll(cx)) {
                Ok(Ok(response)) => response,
                Err(e) => Error::internal(format!("request handler failed: {e}")).into_response(),
            },
            AnswerProjection::Preflight => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                response.headers_mut().insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
                response
            }
        };
        add_cors_headers(&mut response);
        this.timer.record(&response);
        Poll::Ready(Ok(response))
    }
}

/// The headers the spec recommends on every answer (spec: "Web Browser Clients"), so that browsers
/// (Element Web) may call from any origin and read errors as well as answers.
fn add_cors_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Accept"),
    );
}

struct RequestTimer {
    started: Instant,
    method: Method,
    /// The route's template (`MatchedPath` shares it): its endpoint group is worked out only when
    /// the answer is recorded.
    route: Option<MatchedPath>,
    metrics: Arc<Metrics>,
}

impl RequestTimer {
    fn record(&self, response: &Response) {
        let route = self.route.as_ref().map(MatchedPath::as_str);
        self.metrics.record_request(self.method.as_str(), route, response.status(), self.started.elapsed());
    }
}
