//! axum glue: the router, the `Ruma<T>` extractor, the Matrix error response, limits, CORS and
//! metrics. Endpoints are registered from ruma's metadata (method and every path the spec has
//! given them), so no Client-Server path is typed by hand.

pub mod connections;
pub mod error;
pub mod limits;
pub mod metrics;
mod ruma;

use std::future::Future;

use ::ruma::api::{path_builder::PathBuilder, IncomingRequest};
use axum::{
    extract::{Request, State},
    http::{header, Method, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{on, MethodFilter, MethodRouter},
    Extension, Router,
};
use tower_http::cors::{Any, CorsLayer};

pub use self::ruma::{Ruma, RumaResponse, TokenPolicy};

/// Marks routes whose last path parameter (an empty state key) is not in the path.
#[derive(Clone, Copy)]
pub struct EmptyLastPathArg;
use crate::{error::Error, services::Services};

/// Registers Client-Server endpoints on a router from their ruma request types.
pub trait EndpointRouter {
    fn endpoint<T, H, Fut>(self, handler: H) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        H: Fn(Services, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T::OutgoingResponse, Error>> + Send + 'static;
}

/// Registers an endpoint parsed with ruma's request type whose response Axon builds as JSON itself
/// (`/sync`, whose body the WebSocket stream shares).
pub trait JsonEndpointRouter {
    fn json_endpoint<T, H, Fut, R>(self, handler: H) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        H: Fn(Services, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
        R: serde::Serialize + Send + 'static;
}

impl JsonEndpointRouter for Router<Services> {
    fn json_endpoint<T, H, Fut, R>(self, handler: H) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        H: Fn(Services, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
        R: serde::Serialize + Send + 'static,
    {
        // The handler is called before the future that awaits it is made, so that future does not
        // also hold the parsed request: an idle long-poll holds it for its whole wait.
        let method_router = on(method_filter::<T>(), move |State(services): State<Services>, request: Ruma<T>| {
            let answer = handler(services, request);
            async move { answer.await.map(axum::Json) }
        });
        route_all_paths::<T>(self, method_router)
    }
}

fn method_filter<T: IncomingRequest>() -> MethodFilter {
    // Ruma's endpoint methods are all standard ones; this runs once, at start.
    MethodFilter::try_from(T::METHOD).expect("endpoint method is a standard HTTP method")
}

/// Routes every path the spec has given endpoint `T` to `method_router`.
fn route_all_paths<T: IncomingRequest>(
    mut router: Router<Services>,
    method_router: MethodRouter<Services>,
) -> Router<Services> {
    for path in T::PATH_BUILDER.all_paths() {
        router = router.route(path, method_router.clone());
        // An empty state key leaves the path with a trailing slash, or (as many clients send
        // it) without the last segment at all: both mean state key "".
        if let Some(prefix) = path.strip_suffix("/{state_key}") {
            let empty_key = method_router.clone().layer(Extension(EmptyLastPathArg));
            router = router.route(prefix, empty_key.clone()).route(&format!("{prefix}/"), empty_key);
        }
    }
    router
}

impl EndpointRouter for Router<Services> {
    fn endpoint<T, H, Fut>(self, handler: H) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        H: Fn(Services, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T::OutgoingResponse, Error>> + Send + 'static,
    {
        let method_router =
            on(method_filter::<T>(), move |State(services): State<Services>, request: Ruma<T>| async move {
                handler(services, request).await.map(RumaResponse)
            });
        route_all_paths::<T>(self, method_router)
    }
}

/// The Client-Server API router with its fallbacks and layers.
pub fn router(services: Services) -> Router {
    crate::client::routes(Router::new())
        .fallback(|| async { Error::Unrecognized })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(run_writes_to_completion))
        .layer(middleware::from_fn_with_state(services.clone(), metrics::record))
        .layer(cors())
        .with_state(services)
}

/// Browsers (Element Web) call from other origins; the spec asks for these headers on every
/// response and for OPTIONS to be answered (spec: "Web Browser Clients").
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            "x-requested-with".parse().expect("valid header name"),
        ])
        .max_age(std::time::Duration::from_secs(86400))
}

/// A request that may change something runs to its end even when its client hangs up: hyper drops
/// the request's future when the connection closes, and a write dropped halfway leaves what it
/// began behind. On PostgreSQL an event's position reserved but never stored holds back every
/// sync, in every process, until the reservation is dropped as stale; an event stored but never
/// announced reaches its room's members only with the room's next event. Reads (a long-poll
/// above all) still end with their connection.
async fn run_writes_to_completion(request: Request, next: middleware::Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    tokio::spawn(next.run(request))
        .await
        .unwrap_or_else(|e| Error::internal(format!("request handler failed: {e}")).into_response())
}

async fn method_not_allowed(request: Request) -> Response {
    if request.method() == Method::OPTIONS {
        // A preflight the CORS layer did not take (no Origin header) still gets a plain answer.
        return StatusCode::NO_CONTENT.into_response();
    }
    Error::MethodNotAllowed.into_response()
}
