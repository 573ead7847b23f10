//! Refusals: every error is an [`ErrorBody`] with a stable [`ErrorCode`]; a refused request
//! changes nothing.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medley_api::signed::SignatureError;
use medley_api::{ErrorBody, ErrorCode, ErrorDetail};
use medley_core::ManifestError;

use crate::error::StateError;

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A `400 bad_query`.
    pub(crate) fn bad_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, message)
    }

    /// A `500 internal`.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> Self {
        let (status, code) = match &e {
            SignatureError::Missing(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unsigned),
            SignatureError::Replayed => (StatusCode::CONFLICT, ErrorCode::Replayed),
            SignatureError::Stale { .. } => (StatusCode::UNAUTHORIZED, ErrorCode::StaleRequest),
            SignatureError::BadPeer(_) | SignatureError::BadSignature(_) => {
                (StatusCode::UNAUTHORIZED, ErrorCode::BadRequestSignature)
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            StateError::Manifest(ManifestError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge)
            }
            StateError::Manifest(
                ManifestError::BadSignature(_) | ManifestError::BadPublisherKey(_),
            ) => (StatusCode::BAD_REQUEST, ErrorCode::BadSignature),
            StateError::Manifest(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidManifest),
            StateError::UnknownPublisher(_) => (StatusCode::FORBIDDEN, ErrorCode::UnknownPublisher),
            StateError::Coding { .. } => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::WrongCoding),
            StateError::UnknownSong(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownSong),
            StateError::UnknownNode(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownNode),
            StateError::BadRegistration(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRegistration),
            StateError::BadPlay(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadPlay),
            StateError::BadRegion { .. } => (StatusCode::BAD_REQUEST, ErrorCode::BadRegion),
            StateError::BadInvite(_) => (StatusCode::FORBIDDEN, ErrorCode::BadInvite),
            StateError::NoLayout(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoLayout),
            StateError::UnknownLayout(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownLayout),
            StateError::UnknownPartition { .. } => {
                (StatusCode::NOT_FOUND, ErrorCode::UnknownPartition)
            }
            StateError::CannotDrain { .. } => (StatusCode::CONFLICT, ErrorCode::CannotDrain),
            StateError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy),
            StateError::Search(crate::search::SearchError::BadQuery(_)) => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadQuery)
            }
            StateError::Db(e) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable)
            }
            StateError::Db(_) | StateError::Search(_) | StateError::Key(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
            }
        };
        Self::new(status, code, message)
    }
}

/// A request body that could not be read: 413 `too_large` past the body limit, else
/// `other` with the extractor's status.
fn body_rejection(status: StatusCode, text: String, other: ErrorCode) -> ApiError {
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorCode::TooLarge
    } else {
        other
    };
    ApiError::new(status, code, text)
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        body_rejection(r.status(), r.body_text(), ErrorCode::MalformedJson)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        body_rejection(r.status(), r.body_text(), ErrorCode::BadBody)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_query(r.body_text())
    }
}
