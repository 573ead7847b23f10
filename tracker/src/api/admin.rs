//! Admin handlers: drains, publisher keys and layout previews. Each takes the [`Admin`]
//! extractor first, so a request without the token is refused before its body is read.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use medley_api::{
    DrainState, ErrorCode, LayoutPreview, NewPublisher, PreviewQuery, PublisherChange,
    PublisherList,
};

use super::error::ApiError;
use super::extract::{Json, Query, publisher_key};
use super::{Shared, blocking};

/// Proof that a request is an admin's: it carries the configured token as
/// `Authorization: Bearer <token>`; without a configured token, admin requests are accepted
/// only while the API listens on loopback.
pub(crate) struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        authorize(
            app.state.config(),
            parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )?;
        Ok(Self)
    }
}

/// Whether an `Authorization` header value admits an admin request under `config`.
fn authorize(config: &crate::TrackerConfig, authorization: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = &config.admin_token else {
        if config.listen.ip().is_loopback() {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::AdminDisabled,
            "admin requests need admin_token in the tracker's config when it listens beyond loopback",
        ));
    };
    let given = authorization.and_then(|v| v.strip_prefix("Bearer "));
    // Compared in time independent of where the strings differ.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this admin request needs the header Authorization: Bearer <admin_token>",
        ))
    }
}

/// `POST /v1/nodes/{id}/drain`.
pub(crate) async fn drain(
    _: Admin,
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<DrainState>, ApiError> {
    set_draining(app, id, true).await
}

/// `POST /v1/nodes/{id}/undrain`.
pub(crate) async fn undrain(
    _: Admin,
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<DrainState>, ApiError> {
    set_draining(app, id, false).await
}

async fn set_draining(
    app: Shared,
    id: String,
    draining: bool,
) -> Result<axum::Json<DrainState>, ApiError> {
    let node = id.clone();
    let version = blocking(&app, move |s| s.set_draining(&node, draining)).await?;
    Ok(axum::Json(DrainState {
        node: id,
        draining,
        layout_version: Some(version),
    }))
}

/// `GET /v1/publishers`.
pub(crate) async fn publishers(_: Admin, State(app): State<Shared>) -> axum::Json<PublisherList> {
    let publishers = app
        .state
        .catalog()
        .publishers()
        .iter()
        .map(ToString::to_string)
        .collect();
    axum::Json(PublisherList { publishers })
}

/// `POST /v1/publishers`.
pub(crate) async fn add_publisher(
    _: Admin,
    State(app): State<Shared>,
    Json(p): Json<NewPublisher>,
) -> Result<Response, ApiError> {
    let key = publisher_key(&p.key)?;
    blocking(&app, move |s| s.catalog().add_publisher(key)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(PublisherChange {
            key: key.to_string(),
            authorised: true,
            was_authorised: None,
        }),
    )
        .into_response())
}

/// `DELETE /v1/publishers/{key}`.
pub(crate) async fn remove_publisher(
    _: Admin,
    State(app): State<Shared>,
    Path(key): Path<String>,
) -> Result<axum::Json<PublisherChange>, ApiError> {
    let key = publisher_key(&key)?;
    let was = blocking(&app, move |s| s.catalog().remove_publisher(key)).await?;
    Ok(axum::Json(PublisherChange {
        key: key.to_string(),
        authorised: false,
        was_authorised: Some(was),
    }))
}

/// `GET /v1/layout/preview`.
pub(crate) async fn layout_preview(
    _: Admin,
    State(app): State<Shared>,
    Query(q): Query<PreviewQuery>,
) -> Result<axum::Json<LayoutPreview>, ApiError> {
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    };
    let (drain, undrain) = (list(&q.drain), list(&q.undrain));
    if drain.len() + undrain.len() > 1024 {
        return Err(ApiError::bad_query("at most 1024 nodes per preview"));
    }
    Ok(axum::Json(
        blocking(&app, move |s| s.preview_layout(&drain, &undrain)).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_requests_need_the_token_or_a_loopback_tracker() {
        let code = |c: &crate::TrackerConfig, h: Option<&str>| {
            authorize(c, h).err().map(|e| (e.status.as_u16(), e.code))
        };
        let loopback = crate::TrackerConfig::default();
        assert_eq!(code(&loopback, None), None, "no token, loopback: allowed");
        let open = crate::TrackerConfig {
            listen: "192.0.2.1:4700".parse().unwrap(),
            ..crate::TrackerConfig::default()
        };
        assert_eq!(code(&open, None), Some((403, ErrorCode::AdminDisabled)));
        assert_eq!(
            code(&open, Some("Bearer anything")),
            Some((403, ErrorCode::AdminDisabled))
        );
        let guarded = crate::TrackerConfig {
            admin_token: Some("0123456789abcdef".into()),
            ..open
        };
        assert_eq!(code(&guarded, Some("Bearer 0123456789abcdef")), None);
        for bad in [
            None,
            Some("0123456789abcdef"),
            Some("Bearer 0123456789abcdeF"),
            Some("Bearer 0123456789abcde"),
            Some("Basic 0123456789abcdef"),
        ] {
            assert_eq!(
                code(&guarded, bad),
                Some((401, ErrorCode::Unauthorized)),
                "{bad:?}"
            );
        }
    }
}
