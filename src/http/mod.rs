//! axum glue: the router, the `Ruma<T>` extractor, the Matrix error response, limits, and what
//! every request goes through (`requests`: CORS, metrics, writes run to completion). Endpoints are
//! registered from ruma's metadata (method and every path the spec has given them), so no
//! Client-Server path is typed by hand.

pub mod connections;
pub mod error;
pub mod limits;
pub mod metrics;
mod requests;
mod ruma;

use std::{future::Future, marker::PhantomData, pin::Pin};

use ::ruma::api::{path_builder::PathBuilder, IncomingRequest};
use axum::{
    extract::{Request, State},
    handler::Handler,
    response::{IntoResponse, Response},
    routing::{on, MethodFilter, MethodRouter},
    Extension, Router,
};
use futures_util::{future::Either, FutureExt};

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
    /// `handler` is an `async fn(Services, Ruma<T>) -> Result<R, Error>` whose `R` serializes as
    /// JSON (the bounds are `JsonHandler`'s).
    fn json_endpoint<T, H>(self, handler: H) -> Self
    where
        T: IncomingRequest + 'static,
        JsonHandler<T, H>: Handler<Extracted, Services>;
}

impl JsonEndpointRouter for Router<Services> {
    fn json_endpoint<T, H>(self, handler: H) -> Self
    where
        T: IncomingRequest + 'static,
        JsonHandler<T, H>: Handler<Extracted, Services>,
    {
        let method_router = on(method_filter::<T>(), JsonHandler { handler, endpoint: PhantomData::<fn() -> T> });
        route_all_paths::<T>(self, method_router)
    }
}

/// A handler whose long wait (a long-poll) holds as little as can be. axum's handler for a closure
/// is an `async` block that keeps the request's parts (about 250 bytes) and, when the closure
/// returns an `async` block too, the handler's future twice (the one captured and the one it
/// awaits); an idle long-poll holds all of it for its whole wait (BENCHMARKS.md, idle
/// connections). Here the request is extracted first, in its own box, and its handler's future
/// takes that box's place.
pub struct JsonHandler<T, H> {
    handler: H,
    endpoint: PhantomData<fn() -> T>,
}

impl<T, H: Clone> Clone for JsonHandler<T, H> {
    fn clone(&self) -> Self {
        Self { handler: self.handler.clone(), endpoint: PhantomData }
    }
}

/// `JsonHandler`'s marker among axum's handler kinds.
pub struct Extracted;

impl<T, H, Fut, R> Handler<Extracted, Services> for JsonHandler<T, H>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: TokenPolicy,
    H: Fn(Services, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Error>> + Send + 'static,
    R: serde::Serialize + Send + 'static,
{
    type Future = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn call(self, request: Request, services: Services) -> Self::Future {
        let extracted = Ruma::<T>::extract_owned(request, services.clone());
        Box::pin(extracted.then(move |request| match request {
            Ok(request) => {
                Either::Left((self.handler)(services, request).map(|answer| answer.map(axum::Json).into_response()))
            }
            Err(rejection) => Either::Right(std::future::ready(rejection.into_response())),
        }))
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
        .layer(requests::RequestLayer::new(services.metrics.clone()))
        .with_state(services)
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}
