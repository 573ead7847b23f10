//! Medley's control plane, typed: every request and answer of the tracker's HTTP/JSON API
//! under `/v1`, the two signature schemes it uses, and (feature `client`) one
//! [`TrackerClient`] that nodes, listeners, the testnet and tools share.
//!
//! **Participants.** The tracker answers; storage nodes register, send heartbeats and read
//! the layout and their orders; listeners search, resolve songs, report plays and announce
//! what they serve; publishers ask for grants and commit manifests; operators drain nodes
//! and manage publisher keys with the admin token.
//!
//! **Goals.** One definition of every shape on the wire, so that the tracker's handlers and
//! every client agree by construction; adding an endpoint is a type here, a handler there
//! and a method on the client.
//!
//! **Non-goals.** Audio bytes: the tracker is never on the data path (that is
//! [`medley_core::protocol`], over libp2p).
//!
//! **Messages.**
//!
//! | endpoint | request | answer |
//! |---|---|---|
//! | `GET /v1/search` | [`SearchQuery`] | [`SearchResults`] |
//! | `GET /v1/songs/{id}` | | [`Song`] |
//! | `GET /v1/songs/{id}/manifest` | | the signed manifest's bytes |
//! | `GET /v1/songs/{id}/sources` | [`SourcesQuery`] | [`SongSources`] |
//! | `GET /v1/browse/artists` | [`ArtistsQuery`] | [`ArtistPage`] |
//! | `GET /v1/browse/songs` | [`SongsQuery`] | [`SongPage`] |
//! | `GET /v1/browse/random` | [`RandomQuery`] | [`RandomSongs`] |
//! | `POST /v1/publish/grants` | manifest bytes | [`PublishGrants`] |
//! | `POST /v1/publish` | manifest bytes | [`Committed`] |
//! | `POST /v1/plays` | [`PlayReport`] | [`PlayRecorded`] |
//! | `POST /v1/peers/announce` (signed) | [`PeerAnnouncement`] | 204 |
//! | `POST /v1/reports` (signed) | [`SourceReport`] | 204 |
//! | `GET /v1/popularity` | | [`Popularity`] |
//! | `GET /v1/stats` | | [`Stats`] |
//! | `GET /v1/nodes` | | [`NodeList`] |
//! | `POST /v1/nodes/register` (signed) | [`Registration`] | [`Registered`] |
//! | `POST /v1/nodes/heartbeat` (signed) | [`Heartbeat`] | 204 |
//! | `POST /v1/nodes/leave` (signed) | [`Leaving`] | 204 |
//! | `GET /v1/layout` (signed answer) | [`LayoutQuery`] | [`medley_core::Layout`] |
//! | `GET /v1/partitions/{p}/segments` (signed answer) | [`SegmentsQuery`] | [`PartitionSegments`] |
//! | `GET /v1/nodes/{id}/hot` (signed answer) | | [`HotOrders`] |
//! | `POST /v1/nodes/{id}/drain`, `/undrain` (admin) | | [`DrainState`] |
//! | `GET /v1/layout/preview` (admin) | [`PreviewQuery`] | [`LayoutPreview`] |
//! | `GET`, `POST /v1/publishers`, `DELETE /v1/publishers/{key}` (admin) | [`NewPublisher`] | [`PublisherList`], [`PublisherChange`] |
//!
//! Every refusal is an [`ErrorBody`] with a 4xx or 5xx status and a stable [`ErrorCode`].
//! "Signed" requests carry the sender's peer identity ([`signed`]); "signed answers" carry
//! the tracker's signature, which nodes check before they act on them.
//!
//! **Versioning.** Fields are added with defaults, never renamed or removed within `/v1`; a
//! client ignores fields it does not know and keeps error codes it does not know as
//! [`ErrorCode::Other`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod admin;
mod catalog;
#[cfg(feature = "client")]
mod client;
mod error;
mod nodes;
pub mod signed;
mod sources;

pub use admin::{NewPublisher, PublisherChange, PublisherList};
pub use catalog::{
    Artist, ArtistPage, ArtistsQuery, Committed, Delivered, DeliveryReport, Hit, PlayRecorded,
    PlayReport, PublishGrants, RandomQuery, RandomSongs, SearchQuery, SearchResults, Song,
    SongPage, SongsQuery,
};
#[cfg(feature = "client")]
pub use client::{
    HEDGE_AFTER, TrackerClient, TrackerClientBuilder, TrackerError, valid_tracker_urls,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use nodes::{
    Admission, AdmissionChange, ApproveRequest, AuditRecord, DrainState, Heartbeat, HotOrders,
    InviteRequest, InviteToken, LayoutPreview, LayoutQuery, Leaving, Load, NodeEntry, NodeList,
    NodeRecord, NodeSlots, PartitionSegments, PreviewQuery, Registered, Registration, RepairLoad,
    SegmentsQuery, Stats,
};
pub use sources::{
    HaveMap, HotSong, MAX_HAVE_BYTES, MAX_PARTIAL_SONGS, PartialCopy, PeerAnnouncement, Popularity,
    ReportReason, SegmentSources, SlotSource, SongSources, SourceKind, SourceReport, SourcesQuery,
    WholeSource,
};
