//! The one place where [`Error`] becomes an HTTP response: status code, `errcode`, `error`, and the
//! extra fields some codes carry (spec: "Standard error response").

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::error::Error;

impl Error {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Error::NotJson(_) => (S::BAD_REQUEST, "M_NOT_JSON"),
            Error::BadJson(_) => (S::BAD_REQUEST, "M_BAD_JSON"),
            Error::BadRequest(_) => (S::BAD_REQUEST, "M_UNKNOWN"),
            Error::InvalidParam(_) => (S::BAD_REQUEST, "M_INVALID_PARAM"),
            Error::MissingParam(_) => (S::BAD_REQUEST, "M_MISSING_PARAM"),
            Error::MissingToken => (S::UNAUTHORIZED, "M_MISSING_TOKEN"),
            Error::UnknownToken => (S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            Error::Forbidden(_) => (S::FORBIDDEN, "M_FORBIDDEN"),
            Error::UserDeactivated => (S::FORBIDDEN, "M_USER_DEACTIVATED"),
            Error::GuestAccessForbidden => (S::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            Error::NotFound(_) => (S::NOT_FOUND, "M_NOT_FOUND"),
            Error::UserInUse => (S::BAD_REQUEST, "M_USER_IN_USE"),
            Error::InvalidUsername(_) => (S::BAD_REQUEST, "M_INVALID_USERNAME"),
            Error::ServerManaged(_) => (S::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
            Error::UnsupportedRoomVersion(_) => (S::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
            Error::RoomInUse(_) => (S::BAD_REQUEST, "M_ROOM_IN_USE"),
            Error::InvalidRoomState(_) => (S::BAD_REQUEST, "M_INVALID_ROOM_STATE"),
            Error::Conflict(_) => (S::CONFLICT, "M_UNKNOWN"),
            Error::KeyTooLarge(_) => (S::BAD_REQUEST, "M_KEY_TOO_LARGE"),
            Error::ProfileTooLarge(_) => (S::BAD_REQUEST, "M_PROFILE_TOO_LARGE"),
            Error::Unrecognized => (S::NOT_FOUND, "M_UNRECOGNIZED"),
            Error::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            Error::LimitExceeded { .. } => (S::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            Error::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Error::InvalidSignature(_) => (S::BAD_REQUEST, "M_INVALID_SIGNATURE"),
            Error::WrongRoomKeysVersion(_) => (S::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"),
            Error::Uia(_) => (S::UNAUTHORIZED, "M_FORBIDDEN"),
            Error::Database(_) | Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        }
    }
}

impl Error {
    /// The Matrix `errcode` of this error.
    pub fn errcode(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The `error` text a client may see (no internal details).
    pub fn public_message(&self) -> String {
        match self {
            Error::Database(_) | Error::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                "internal server error".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, errcode) = self.status_and_code();
        let body = match &self {
            // The UIA body is the flows object; `errcode` appears only when a stage failed.
            Error::Uia(info) => serde_json::to_value(info).unwrap_or_else(|_| json!({})),
            Error::UnknownToken => json!({ "errcode": errcode, "error": self.to_string(), "soft_logout": false }),
            Error::WrongRoomKeysVersion(current) => {
                json!({ "errcode": errcode, "error": self.to_string(), "current_version": current })
            }
            Error::LimitExceeded { retry_after_ms } => {
                json!({ "errcode": errcode, "error": self.to_string(), "retry_after_ms": retry_after_ms })
            }
            Error::Database(_) | Error::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                json!({ "errcode": errcode, "error": "internal server error" })
            }
            _ => json!({ "errcode": errcode, "error": self.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if let Error::LimitExceeded { retry_after_ms } = self {
            let seconds = retry_after_ms.div_ceil(1000).to_string();
            if let Ok(value) = seconds.parse() {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}
