//! Handlers of the node registry and the layout: registration, heartbeats, leave notices,
//! what nodes act on (signed answers), and the counters.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use medley_api::{
    Heartbeat, HotOrders, LayoutQuery, Leaving, NodeEntry, NodeList, PartitionSegments, Registered,
    Registration, SegmentsQuery, Stats,
};

use super::error::ApiError;
use super::extract::{Query, Signed};
use super::{Shared, blocking};

/// `GET /v1/nodes`.
pub(crate) async fn nodes(State(app): State<Shared>) -> axum::Json<NodeList> {
    let weights = app.state.weights();
    let nodes = app
        .state
        .nodes()
        .into_iter()
        .map(|(node, alive)| {
            let banned = app.state.banned(&node.peer_id);
            let weight = weights.get(&node.peer_id).copied().unwrap_or(0);
            NodeEntry {
                node,
                alive,
                banned,
                weight,
            }
        })
        .collect();
    axum::Json(NodeList { nodes })
}

/// `POST /v1/nodes/register` (signed).
pub(crate) async fn register(
    State(app): State<Shared>,
    body: Signed<Registration>,
) -> Result<axum::Json<Registered>, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let reg = body.signed_by(&peer_id)?;
    let (layout_version, rec) = blocking(&app, move |s| s.register(reg)).await?;
    Ok(axum::Json(Registered {
        layout_version,
        tracker_key: app.state.tracker_id(),
        admission: rec.admission,
        evicted: rec.evicted,
    }))
}

/// `POST /v1/nodes/heartbeat` (signed).
pub(crate) async fn heartbeat(
    State(app): State<Shared>,
    body: Signed<Heartbeat>,
) -> Result<StatusCode, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let hb = body.signed_by(&peer_id)?;
    // Kept in memory; a node back from down moves the layout, which writes to the store.
    if app.state.heartbeat(hb)? {
        blocking(&app, |s| s.refresh_layout()).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/nodes/leave` (signed).
pub(crate) async fn leave(
    State(app): State<Shared>,
    body: Signed<Leaving>,
) -> Result<StatusCode, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let l = body.signed_by(&peer_id)?;
    blocking(&app, move |s| s.leave(&l.peer_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/nodes/{id}/hot` (signed answer).
pub(crate) async fn hot_orders(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<HotOrders>, ApiError> {
    let songs = app.state.hot_orders(&id)?;
    Ok(axum::Json(HotOrders { node: id, songs }))
}

/// `GET /v1/layout` (signed answer).
pub(crate) async fn layout(
    State(app): State<Shared>,
    Query(q): Query<LayoutQuery>,
) -> Result<axum::Json<medley_core::Layout>, ApiError> {
    match q.version {
        Some(v) => Ok(axum::Json(blocking(&app, move |s| s.layout_at(v)).await?)),
        // The one endpoint that sends the whole layout; everything else shares the Arc.
        None => Ok(axum::Json(app.state.layout()?.as_ref().clone())),
    }
}

/// Largest page of `GET /v1/partitions/{p}/segments`.
const MAX_SEGMENT_PAGE: usize = 10_000;

/// `GET /v1/partitions/{p}/segments` (signed answer).
pub(crate) async fn partition_segments(
    State(app): State<Shared>,
    Path(p): Path<String>,
    Query(q): Query<SegmentsQuery>,
) -> Result<axum::Json<PartitionSegments>, ApiError> {
    let partition: u16 = p
        .parse()
        .map_err(|e| ApiError::bad_query(format!("partition {p:?}: {e}")))?;
    let after = q
        .after
        .map(|a| a.parse::<medley_core::SegmentId>())
        .transpose()
        .map_err(|e| ApiError::bad_query(format!("after: {e}")))?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_SEGMENT_PAGE {
        return Err(ApiError::bad_query(format!(
            "limit must be 1 to {MAX_SEGMENT_PAGE}"
        )));
    }
    let segments = blocking(&app, move |s| {
        s.catalog().partition_segments(partition, after, limit)
    })
    .await?;
    let next = (segments.len() == limit)
        .then(|| segments.last().map(|s| s.id))
        .flatten();
    Ok(axum::Json(PartitionSegments {
        partition,
        segments,
        next,
    }))
}

/// `GET /v1/stats`.
pub(crate) async fn stats(State(app): State<Shared>) -> axum::Json<Stats> {
    let t = app.state.node_totals();
    let c = app.state.config();
    axum::Json(Stats {
        songs: app.state.catalog().song_count(),
        nodes: t.nodes,
        nodes_alive: t.alive,
        nodes_draining: t.draining,
        repair: t.repair,
        layout_version: app.state.layout_version(),
        layout_oldest: app.state.layout_oldest(),
        partitions: c.partitions,
        k: c.k,
        m: c.m,
        tracker_key: app.state.tracker_id(),
        delivered: app.metrics.delivered_totals(),
    })
}
