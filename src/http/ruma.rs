//! `Ruma<T>`: the extractor every Client-Server handler takes. It reads the body within the size
//! limit, resolves the access token as the endpoint's auth scheme requires, and parses the request
//! with ruma's type for the endpoint; `RumaResponse` turns ruma's response type back into HTTP.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Query, RawPathParams, Request},
    http::{header, request::Parts, Method},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use ruma::api::{
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication,
    },
    error::{DeserializationError, FromHttpRequestError},
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
};

use crate::{
    accounts::Session,
    error::{Error, Result},
    services::Services,
};

/// A parsed request for endpoint `T`, with who sent it.
pub struct Ruma<T> {
    pub body: T,
    /// The session of the access token, when the endpoint takes one and one was given.
    pub session: Option<Session>,
    pub client_ip: IpAddr,
}

impl<T> Ruma<T> {
    /// The authenticated session, for endpoints whose token is optional in the spec but required
    /// by Axon for the operation at hand.
    pub fn require_session(&self) -> Result<&Session> {
        self.session.as_ref().ok_or(Error::MissingToken)
    }
}

/// How an endpoint's auth scheme (from ruma's metadata) treats access tokens.
#[derive(PartialEq, Eq)]
pub enum TokenUse {
    Required,
    Optional,
    /// Tokens are not looked at (login, registration: appservices are not supported).
    Ignored,
}

pub trait TokenPolicy {
    const USE: TokenUse;
}
impl TokenPolicy for AccessToken {
    const USE: TokenUse = TokenUse::Required;
}
impl TokenPolicy for AppserviceToken {
    const USE: TokenUse = TokenUse::Required;
}
impl TokenPolicy for AccessTokenOptional {
    const USE: TokenUse = TokenUse::Optional;
}
impl TokenPolicy for NoAccessToken {
    const USE: TokenUse = TokenUse::Optional;
}
impl TokenPolicy for AppserviceTokenOptional {
    const USE: TokenUse = TokenUse::Ignored;
}
impl TokenPolicy for NoAuthentication {
    const USE: TokenUse = TokenUse::Ignored;
}

impl<T> FromRequest<Services> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: TokenPolicy,
{
    type Rejection = Error;

    async fn from_request(request: Request, services: &Services) -> Result<Self> {
        // Boxed: inline, the extraction's state (body read, token lookup) would stay reserved in
        // the handler's future for as long as the request lasts, a long-poll's whole wait.
        Box::pin(Self::extract(request, services)).await
    }
}

impl<T> Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: TokenPolicy,
{
    /// The extraction as a boxed future that owns what it needs, for a handler that chains it.
    pub(super) fn extract_owned(
        request: Request,
        services: Services,
    ) -> Pin<Box<dyn Future<Output = Result<Self>> + Send>> {
        Box::pin(async move { Self::extract(request, &services).await })
    }
}

impl<T> Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: TokenPolicy,
{
    async fn extract(request: Request, services: &Services) -> Result<Self> {
        let (mut parts, body) = request.into_parts();
        let mut path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, services).await {
            Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
            Err(_) => return Err(Error::InvalidParam("path parameters are not valid UTF-8".into())),
        };
        if parts.extensions.get::<super::EmptyLastPathArg>().is_some() {
            path_args.push(String::new());
        }
        let client_ip = client_ip(&parts);
        let body = read_body(body, &parts, services.config.limits.max_request_bytes).await?;

        let session = match (<T::Authentication as TokenPolicy>::USE, access_token(&parts)?) {
            (TokenUse::Ignored, _) | (TokenUse::Optional, None) => None,
            (TokenUse::Required, None) => return Err(Error::MissingToken),
            (_, Some(token)) => {
                let session = services.accounts.session_for_token(&token).await?.ok_or(Error::UnknownToken)?;
                services.accounts.note_device_seen(&session, &client_ip.to_string()).await?;
                Some(session)
            }
        };

        // Some clients (matrix-nio's join) send POST with no body at all: that is `{}`.
        let body = if body.is_empty() && matches!(parts.method, Method::POST | Method::PUT) {
            Bytes::from_static(b"{}")
        } else {
            body
        };
        if matches!(parts.method, Method::POST | Method::PUT) {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| Error::NotJson(format!("the request body is not JSON: {e}")))?;
        }
        let body = upgrade_legacy_uia_password(body);
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let request = axum::http::Request::from_parts(parts, body.as_ref());
        // ruma's parsers can panic on some malformed bodies (e.g. a login without `type`): that
        // is bad input, not a server fault.
        let parsed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(request, &args)));
        let body = match parsed {
            Ok(result) => result.map_err(request_error)?,
            Err(_) => {
                return Err(Error::BadJson("the request body does not have the shape this endpoint takes".into()))
            }
        };
        Ok(Ruma { body, session, client_ip })
    }
}

/// UIA `m.login.password` written the pre-r0.4 way, with a top-level `user` instead of an
/// `identifier` (matrix-nio documents this form, Synapse accepts it), is rewritten to the current
/// form before ruma parses it.
fn upgrade_legacy_uia_password(body: Bytes) -> Bytes {
    // Cheap test first: only UIA requests carry an `auth` object.
    if !body.windows(6).any(|w| w == b"\"auth\"") {
        return body;
    }
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let Some(serde_json::Value::Object(auth)) = object.get_mut("auth") else { return body };
    if auth.get("type").and_then(|t| t.as_str()) != Some("m.login.password") || auth.contains_key("identifier") {
        return body;
    }
    let Some(user) = auth.remove("user") else { return body };
    auth.insert("identifier".into(), serde_json::json!({"type": "m.id.user", "user": user}));
    serde_json::to_vec(&object).map(Bytes::from).unwrap_or(body)
}

fn request_error(e: FromHttpRequestError) -> Error {
    match e {
        FromHttpRequestError::MethodMismatch { .. } => Error::MethodNotAllowed,
        FromHttpRequestError::Deserialization(e) => match e {
            DeserializationError::Json(e) => Error::BadJson(e.to_string()),
            DeserializationError::Utf8(e) => Error::NotJson(e.to_string()),
            DeserializationError::Ident(e) => Error::InvalidParam(e.to_string()),
            other => Error::InvalidParam(other.to_string()),
        },
        other => Error::BadJson(other.to_string()),
    }
}

/// Reads the body, refusing it as soon as it passes `max` bytes (by its declared length, or while
/// it streams) so that an oversized body is never buffered whole.
async fn read_body(body: Body, parts: &Parts, max: usize) -> Result<Bytes> {
    let too_large = || Error::TooLarge(format!("request bodies are limited to {max} bytes"));
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|_| too_large())
}

/// The access token from `Authorization: Bearer`, or the deprecated `access_token` query parameter.
fn access_token(parts: &Parts) -> Result<Option<String>> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Error::UnknownToken)?;
        return match value.strip_prefix("Bearer ") {
            Some(token) => Ok(Some(token.trim().to_owned())),
            None => Err(Error::MissingToken),
        };
    }
    let query: Vec<(String, String)> = Query::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    Ok(query.into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v))
}

fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A ruma response type as an HTTP response.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())).into_response(),
            Err(e) => Error::internal(e).into_response(),
        }
    }
}
