//! Handlers of the catalogue: publishing, search, browsing, songs and their sources, plays,
//! and what listeners announce and report.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use medley_api::{
    ArtistPage, ArtistsQuery, Committed, ErrorCode, PeerAnnouncement, PlayRecorded, PlayReport,
    Popularity, PublishGrants, RandomQuery, RandomSongs, ReportReason, SearchQuery, SearchResults,
    Song, SongPage, SongSources, SongsQuery, SourceReport, SourcesQuery,
};

use super::error::ApiError;
use super::extract::{Body, Json, Query, Signed, song_id};
use super::{Shared, blocking, cancellable};

/// `POST /v1/publish`: the body is the signed manifest.
pub(crate) async fn publish(
    State(app): State<Shared>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let committed: Committed = blocking(&app, move |s| s.catalog().publish(&body)).await?;
    let status = if committed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(committed)).into_response())
}

/// `POST /v1/publish/grants`: the body is the signed manifest, as for a publish.
pub(crate) async fn publish_grants(
    State(app): State<Shared>,
    Body(body): Body,
) -> Result<axum::Json<PublishGrants>, ApiError> {
    Ok(axum::Json(blocking(&app, move |s| s.grants(&body)).await?))
}

/// `GET /v1/search`.
pub(crate) async fn search(
    State(app): State<Shared>,
    Query(q): Query<SearchQuery>,
) -> Result<axum::Json<SearchResults>, ApiError> {
    Ok(axum::Json(
        blocking(&app, move |s| s.catalog().search(&q)).await?,
    ))
}

/// `GET /v1/songs/{id}`.
pub(crate) async fn song(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<Song>, ApiError> {
    let id = song_id(&id)?;
    let (m, plays) = blocking(&app, move |s| {
        Ok((s.catalog().manifest(id)?, s.catalog().plays(id)?))
    })
    .await?;
    let mut view = Song::of(&m);
    view.plays = plays.values().sum();
    view.plays_by_region = plays;
    Ok(axum::Json(view))
}

/// `GET /v1/songs/{id}/manifest`: the signed manifest's bytes.
pub(crate) async fn manifest(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = song_id(&id)?;
    let m = blocking(&app, move |s| s.catalog().manifest(id)).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        m.encoded().to_vec(),
    )
        .into_response())
}

/// `GET /v1/songs/{id}/sources`.
pub(crate) async fn sources(
    State(app): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<SourcesQuery>,
) -> Result<axum::Json<SongSources>, ApiError> {
    let id = song_id(&id)?;
    Ok(axum::Json(
        blocking(&app, move |s| s.song_sources(id, q.region.as_deref())).await?,
    ))
}

/// `GET /v1/browse/artists`.
pub(crate) async fn artists(
    State(app): State<Shared>,
    Query(q): Query<ArtistsQuery>,
) -> Result<axum::Json<ArtistPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    let after = q.after.to_lowercase();
    let artists = blocking(&app, move |s| s.catalog().artists(&after, limit)).await?;
    // A full page may have more after it; the cursor is the last key.
    let next = (artists.len() == limit)
        .then(|| artists.last().map(|a| a.key.clone()))
        .flatten();
    Ok(axum::Json(ArtistPage { artists, next }))
}

/// `GET /v1/browse/random`.
pub(crate) async fn random_songs(
    State(app): State<Shared>,
    Query(q): Query<RandomQuery>,
) -> Result<axum::Json<RandomSongs>, ApiError> {
    let size = q.size.unwrap_or(10);
    let songs = blocking(&app, move |s| {
        s.catalog().random_songs(size, q.genre.as_deref())
    })
    .await?;
    Ok(axum::Json(RandomSongs { songs }))
}

/// `GET /v1/browse/songs`.
pub(crate) async fn browse_songs(
    State(app): State<Shared>,
    Query(q): Query<SongsQuery>,
) -> Result<axum::Json<SongPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    let offset = q.offset;
    let (songs, total) = cancellable(&app, move |s, cancelled| {
        Ok((
            s.catalog().songs_page(offset, limit, cancelled)?,
            s.catalog().song_count(),
        ))
    })
    .await?;
    Ok(axum::Json(SongPage {
        total,
        offset,
        songs,
    }))
}

/// Largest byte count one play may report per class: 16 GiB, far above any song.
const MAX_PLAY_BYTES: u64 = 16 << 30;

/// `POST /v1/plays`.
pub(crate) async fn play(
    State(app): State<Shared>,
    Json(report): Json<PlayReport>,
) -> Result<axum::Json<PlayRecorded>, ApiError> {
    let id = song_id(&report.song)?;
    let d = report.delivery.unwrap_or_default();
    let classes = [d.cache_bytes, d.peer_bytes, d.hot_bytes, d.rebuilt_bytes];
    if classes.iter().any(|&b| b > MAX_PLAY_BYTES) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadPlay,
            "a play reports at most 16 GiB per source class",
        ));
    }
    let region = report.region;
    let plays = blocking(&app, move |s| s.record_play(id, &region)).await?;
    app.metrics.delivered(&d);
    Ok(axum::Json(PlayRecorded {
        song: id,
        plays_in_region: plays,
    }))
}

/// `GET /v1/popularity`.
pub(crate) async fn popularity(State(app): State<Shared>) -> axum::Json<Popularity> {
    axum::Json(Popularity {
        hot: app.state.hot_songs(),
    })
}

/// `POST /v1/peers/announce` (signed).
pub(crate) async fn announce_peer(
    State(app): State<Shared>,
    body: Signed<PeerAnnouncement>,
) -> Result<StatusCode, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let a = body.signed_by(&peer_id)?;
    app.state.announce_peer(a)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/reports` (signed when the client has an identity).
pub(crate) async fn report_source(
    State(app): State<Shared>,
    body: Signed<SourceReport>,
) -> Result<StatusCode, ApiError> {
    let Signed { signer, body: r } = body;
    song_id(&r.song)?;
    if r.reason == ReportReason::Unknown {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadReport,
            "unknown reason: expected bad_hash, failed, timeout or served",
        ));
    }
    tracing::info!(source = %r.peer_id, song = %r.song, reason = r.reason.as_str(), reporter = ?signer, "a client reports a source");
    app.state
        .report_source(&r.peer_id, signer.as_deref(), r.reason)?;
    Ok(StatusCode::NO_CONTENT)
}
