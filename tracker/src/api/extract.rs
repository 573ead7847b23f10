//! Reading requests: JSON bodies (signed or not), query strings and ids, each refused with
//! its own [`ErrorCode`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use medley_api::ErrorCode;
use medley_api::signed::{
    PEER_HEADER, RequestSignature, SIGNATURE_HEADER, SignatureError, TIME_HEADER, verify_request,
};
use medley_core::{PublisherId, SongId};

use super::error::ApiError;
use super::{App, Shared};

/// A query string, refused as `400 bad_query` when it does not parse.
pub(crate) struct Query<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(q) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::from)?;
        Ok(Self(q))
    }
}

/// A JSON body, refused as `malformed_json` (or `too_large`) when it does not parse.
pub(crate) struct Json<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state)
            .await
            .map_err(ApiError::from)?;
        Ok(Self(v))
    }
}

/// A raw body, refused as `bad_body` (or `too_large`) when it cannot be read.
pub(crate) struct Body(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(
            Bytes::from_request(req, state)
                .await
                .map_err(ApiError::from)?,
        ))
    }
}

/// A JSON body and, when the request was signed ([`medley_api::signed`]), the peer that
/// signed it. Unsigned requests are refused when `require_signatures` is on; a signature
/// that is present is always checked.
pub(crate) struct Signed<T> {
    pub(crate) signer: Option<String>,
    pub(crate) body: T,
}

impl<T> Signed<T> {
    /// The body, once the signer is the peer it names (when signed or required).
    pub(crate) fn signed_by(self, peer_id: &str) -> Result<T, ApiError> {
        match &self.signer {
            Some(s) if s != peer_id => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::WrongSigner,
                format!("signed by {s}, but the request is about {peer_id}"),
            )),
            _ => Ok(self.body),
        }
    }
}

impl<T: serde::de::DeserializeOwned> FromRequest<Shared> for Signed<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Shared) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::MalformedJson,
                "expected a body with content type application/json",
            ));
        }
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), app)
            .await
            .map_err(ApiError::from)?;
        let signer = signer(app, &parts, &bytes)?;
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                format!("the JSON body is invalid: {e}"),
            )
        })?;
        Ok(Self { signer, body })
    }
}

/// The peer that signed a request, after its signature, time and freshness are checked;
/// `None` for an unsigned request where signatures are optional.
fn signer(app: &App, parts: &Parts, body: &[u8]) -> Result<Option<String>, ApiError> {
    let header = |name: &'static str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (peer, time, signature) = (
        header(PEER_HEADER),
        header(TIME_HEADER),
        header(SIGNATURE_HEADER),
    );
    if (&peer, &time, &signature) == (&None, &None, &None) && !app.state.config().require_signatures
    {
        return Ok(None);
    }
    let sig = RequestSignature {
        peer: peer.ok_or(SignatureError::Missing(PEER_HEADER))?,
        time_ms: time
            .ok_or(SignatureError::Missing(TIME_HEADER))?
            .parse()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::StaleRequest,
                    format!("{TIME_HEADER} is not a number of milliseconds"),
                )
            })?,
        signature: signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?,
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let now = medley_core::unix_now_ms();
    let peer = verify_request(&sig, parts.method.as_str(), path, body, now)?;
    app.replays.lock().check(&sig, now)?;
    Ok(Some(peer.to_string()))
}

/// A song id from a path or body, refused as `400 bad_id`.
pub(crate) fn song_id(text: &str) -> Result<SongId, ApiError> {
    text.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadId,
            format!("song id {text:?}: {e}"),
        )
    })
}

/// A publisher key, refused as `400 bad_key`.
pub(crate) fn publisher_key(text: &str) -> Result<PublisherId, ApiError> {
    text.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadKey,
            format!("publisher key {text:?}: {e}"),
        )
    })
}
