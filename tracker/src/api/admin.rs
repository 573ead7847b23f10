//! Admin handlers: drains, publisher keys and layout previews. Each takes the [`Admin`]
//! extractor first, so a request without the token is refused before its body is read.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use medley_api::{
    Admission, AdmissionChange, ApproveRequest, DrainState, ErrorCode, InviteRequest,
    LayoutPreview, NewPublisher, PreviewQuery, PublisherChange, PublisherList,
};

use medley_daemon::http::LocalSocket;

use super::error::ApiError;
use super::extract::{Json, Query, publisher_key};
use super::{Shared, blocking};

/// Proof that a request is an admin's. It came through the admin socket (whoever may open
/// that file is an admin); or over HTTP, carrying the configured token as
/// `Authorization: Bearer <token>` (or, with `insecure_dev_admin`, no token), with a `Host`
/// the tracker answers to (an IP address, localhost, or one of `hostnames`: not a name a
/// web page rebound to this address), and, when it changes something (a POST), with a JSON
/// body, which a cross-site form cannot send.
pub(crate) struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        if parts.extensions.get::<LocalSocket>().is_some() {
            return Ok(Self);
        }
        let config = app.state.config();
        let header =
            |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        check_host(config, header(header::HOST))?;
        authorize(config, header(header::AUTHORIZATION))?;
        if parts.method == axum::http::Method::POST {
            let json =
                header(header::CONTENT_TYPE).is_some_and(|v| v.starts_with("application/json"));
            if !json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::MalformedJson,
                    "admin requests that change something take a JSON body (content type \
                     application/json), so that no web form can send one",
                ));
            }
        }
        Ok(Self)
    }
}

/// Whether `host` (a `Host` header value) names this tracker: an IP address, localhost, or
/// one of `hostnames`, with any port.
fn check_host(config: &crate::TrackerConfig, host: Option<&str>) -> Result<(), ApiError> {
    let refuse = |why: String| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::BadHost,
            why,
        ))
    };
    let Some(host) = host else {
        return refuse("an admin request needs a Host header".into());
    };
    // `[v6]:port`, `v4:port`, `name:port`, or any of them without a port.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let known = name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || config
            .hostnames
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name));
    if known {
        Ok(())
    } else {
        refuse(format!(
            "Host {host:?} is not a name of this tracker (an IP address, localhost, or one of \
             `hostnames` in its config)"
        ))
    }
}

/// Whether an `Authorization` header value admits an admin request over HTTP under
/// `config`.
fn authorize(config: &crate::TrackerConfig, authorization: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = &config.admin_token else {
        if config.insecure_dev_admin && config.listen.ip().is_loopback() {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::AdminDisabled,
            "admin requests over HTTP need admin_token in the tracker's config; on the \
             tracker's machine, medley-tracker commands use its admin socket instead",
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

/// `POST /v1/nodes/invites`: a join token for one node.
pub(crate) async fn invite(
    _: Admin,
    State(app): State<Shared>,
    Json(req): Json<InviteRequest>,
) -> Result<Response, ApiError> {
    let token = blocking(&app, move |s| s.invite(&req)).await?;
    Ok((StatusCode::CREATED, axum::Json(token)).into_response())
}

/// `POST /v1/nodes/{id}/approve`.
pub(crate) async fn approve(
    _: Admin,
    State(app): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<ApproveRequest>,
) -> Result<axum::Json<AdmissionChange>, ApiError> {
    if req.capacity == Some(0) {
        return Err(ApiError::from(crate::StateError::BadRegistration(
            "an approval's capacity must be at least 1 byte",
        )));
    }
    let node = id.clone();
    let version = blocking(&app, move |s| s.approve(&node, req.capacity)).await?;
    Ok(axum::Json(AdmissionChange {
        node: id,
        admission: Admission::Admitted,
        layout_version: version,
    }))
}

/// `POST /v1/nodes/{id}/revoke`.
pub(crate) async fn revoke(
    _: Admin,
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<AdmissionChange>, ApiError> {
    let node = id.clone();
    let version = blocking(&app, move |s| s.revoke(&node)).await?;
    Ok(axum::Json(AdmissionChange {
        node: id,
        admission: Admission::Revoked,
        layout_version: version,
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
    fn admin_over_http_needs_the_token_or_an_explicit_dev_mode() {
        let code = |c: &crate::TrackerConfig, h: Option<&str>| {
            authorize(c, h).err().map(|e| (e.status.as_u16(), e.code))
        };
        // A loopback tracker without a token: refused, as behind a reverse proxy on the
        // same host, every request comes from loopback.
        let loopback = crate::TrackerConfig::default();
        assert_eq!(code(&loopback, None), Some((403, ErrorCode::AdminDisabled)));
        let dev = crate::TrackerConfig {
            insecure_dev_admin: true,
            ..crate::TrackerConfig::default()
        };
        assert_eq!(code(&dev, None), None, "explicit dev mode on loopback");
        let open = crate::TrackerConfig {
            listen: "192.0.2.1:4700".parse().unwrap(),
            insecure_dev_admin: true,
            ..crate::TrackerConfig::default()
        };
        assert_eq!(code(&open, None), Some((403, ErrorCode::AdminDisabled)));
        let guarded = crate::TrackerConfig {
            admin_token: Some("0123456789abcdef".into()),
            insecure_dev_admin: false,
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

    #[test]
    fn admin_hosts_are_ip_addresses_localhost_or_configured_names() {
        let c = crate::TrackerConfig {
            hostnames: vec!["tracker.example.org".into()],
            ..crate::TrackerConfig::default()
        };
        for ok in [
            "127.0.0.1:4700",
            "127.0.0.1",
            "[::1]:4700",
            "localhost:4700",
            "LOCALHOST",
            "tracker.example.org",
            "Tracker.Example.org:443",
            "192.0.2.7:80",
        ] {
            assert!(check_host(&c, Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some("evil.example.com:4700"),
            Some("localhost.evil.example.com"),
            Some("tracker.example.org.evil.example.com"),
        ] {
            let e = check_host(&c, bad).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (403, ErrorCode::BadHost),
                "{bad:?}"
            );
        }
    }
}
