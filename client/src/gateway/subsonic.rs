//! A subset of the Subsonic API (version 1.16.1, with the OpenSubsonic markers), enough for
//! Subsonic apps to browse, search and play: `ping`, `getLicense`, `getMusicFolders`,
//! `getArtists`, `getArtist`, `getAlbum`, `getSong`, `search3`, `stream`, `download`,
//! `getCoverArt`, `getRandomSongs` and `scrobble`, plus the folder view of older apps
//! (`getIndexes`, `getMusicDirectory`), at `/rest/<method>` or
//! `/rest/<method>.view`, by GET or by POST with a form body.
//!
//! Answers are XML, or JSON with `f=json`. Authentication is the configured user with a
//! token (`t` = md5(password ‖ `s`)) or a password (`p`, plain or `enc:` hex). Errors carry
//! the spec's codes: 10 missing parameter, 40 wrong username or password, 50 not
//! authorized, 70 not found, 0 anything else.
//!
//! Ids: a song's id is its Medley song id; an artist's is `ar-` and the hex of its lowercased
//! name; an album's is `al-`, the hex of the lowercased artist, `-`, the hex of the
//! lowercased album. They decode back to the tracker's exact filters, so no table is kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use medley_core::SongId;
use serde_json::{Map, Value, json};

use super::Shared;
use medley_api::{Hit, SearchQuery};

const API_VERSION: &str = "1.16.1";
const XMLNS: &str = "http://subsonic.org/restapi";
/// Songs of one artist read to list its albums.
const MAX_ARTIST_SONGS: usize = 1000;
/// Artists listed by `getArtists`.
const MAX_ARTISTS: usize = 20_000;
/// Leading words ignored when indexing artists by letter.
const IGNORED_ARTICLES: &str = "The El La Los Las Le Les";

/// The account Subsonic apps log in with.
#[derive(Clone, PartialEq, Eq)]
pub struct SubsonicUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for SubsonicUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubsonicUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A Subsonic error: code and message.
#[derive(Debug)]
struct Failure(u16, String);

fn missing(name: &str) -> Failure {
    Failure(10, format!("required parameter is missing: {name}"))
}

fn not_found(what: impl std::fmt::Display) -> Failure {
    Failure(70, format!("{what} not found"))
}

fn upstream(e: &crate::ClientError) -> Failure {
    match e {
        crate::ClientError::UnknownSong(id) => not_found(format_args!("song {id}")),
        other => Failure(0, other.to_string()),
    }
}

/// The request's parameters, from the query string and a form body, in order.
#[derive(Debug)]
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, name: &str) -> Result<&str, Failure> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(name))
    }

    /// A numeric parameter, `default` when absent; a malformed one is an error.
    fn number(&self, name: &str, default: usize) -> Result<usize, Failure> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Failure(0, format!("parameter {name} is not a number: {v:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Xml,
    Json,
}

/// Checks the credentials: user `u` with token `t` and salt `s`, or password `p`.
fn authenticate(user: Option<&SubsonicUser>, p: &Params) -> Result<(), Failure> {
    let u = p.need("u")?;
    let Some(account) = user else {
        return Err(Failure(
            50,
            "the Subsonic API is off: set subsonic_user and subsonic_password in medley.toml"
                .into(),
        ));
    };
    let wrong = || Failure(40, "wrong username or password".into());
    let good = if let (Some(t), Some(s)) = (p.get("t"), p.get("s")) {
        let digest = Md5::digest(format!("{}{s}", account.password).as_bytes());
        hex::encode(digest).eq_ignore_ascii_case(t)
    } else if let Some(pw) = p.get("p") {
        let plain = match pw.strip_prefix("enc:") {
            Some(h) => hex::decode(h)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(wrong)?,
            None => pw.to_string(),
        };
        plain == account.password
    } else {
        return Err(missing("t and s, or p"));
    };
    if good && u == account.name {
        Ok(())
    } else {
        Err(wrong())
    }
}

/// Entry point for `/rest/{method}`.
pub(super) async fn handle(
    State(gw): State<Shared>,
    Path(method): Path<String>,
    http_method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    gw.metrics.subsonic_requests.fetch_add(1, Ordering::Relaxed);
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        pairs.extend(form_urlencoded::parse(&body).into_owned());
    }
    let params = Params(pairs);
    let format = match params.get("f") {
        Some("json") => Format::Json,
        _ => Format::Xml,
    };
    let method = method.strip_suffix(".view").unwrap_or(&method).to_string();
    let result = match authenticate(gw.subsonic.as_ref(), &params) {
        Ok(()) => dispatch(&gw, &method, &params, &http_method, &headers).await,
        Err(f) => Err(f),
    };
    match result {
        Ok(Reply::Body(v)) => respond(format, StatusCode::OK, ok_envelope(v)),
        Ok(Reply::Raw(r)) => r,
        Err(Failure(code, message)) => {
            gw.metrics.subsonic_errors.fetch_add(1, Ordering::Relaxed);
            let status = if code == 0 && message.starts_with("unknown method") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            respond(
                format,
                status,
                envelope(
                    "failed",
                    json!({ "error": { "code": code, "message": message } }),
                ),
            )
        }
    }
}

enum Reply {
    /// Fields of `subsonic-response`.
    Body(Value),
    /// A response sent as is (audio, images).
    Raw(Response),
}

async fn dispatch(
    gw: &Shared,
    method: &str,
    p: &Params,
    http_method: &Method,
    headers: &HeaderMap,
) -> Result<Reply, Failure> {
    let tracker = gw.client.tracker();
    let body = match method {
        "ping" => json!({}),
        "getLicense" => json!({ "license": { "valid": true } }),
        "getMusicFolders" => {
            json!({ "musicFolders": { "musicFolder": [{ "id": 1, "name": "Medley" }] } })
        }
        "getArtists" => get_artists(gw).await?,
        // The folder view of older apps: artists, their albums, the albums' songs.
        "getIndexes" => {
            let mut v = get_artists(gw).await?;
            let mut indexes = v["artists"].take();
            indexes["lastModified"] = json!(0);
            json!({ "indexes": indexes })
        }
        "getMusicDirectory" => music_directory(gw, p.need("id")?).await?,
        "getArtist" => get_artist(gw, p.need("id")?).await?,
        "getAlbum" => get_album(gw, p.need("id")?).await?,
        "getSong" => {
            let id = song_id(p.need("id")?)?;
            let info = tracker
                .song(id)
                .await
                .map_err(|e| upstream(&crate::tracker::unknown_song(id)(e)))?;
            let mut song = child_of_hit(&Hit::of(&id, &info.meta));
            song["size"] = json!(info.size);
            json!({ "song": song })
        }
        "search3" => search3(gw, p).await?,
        "getRandomSongs" => {
            let size = p.number("size", 10)?.clamp(1, 100);
            let songs = tracker
                .random_songs(size, p.get("genre").filter(|g| !g.is_empty()))
                .await
                .map_err(|e| upstream(&e.into()))?;
            json!({ "randomSongs": { "song": songs.iter().map(child_of_hit).collect::<Vec<_>>() } })
        }
        "stream" | "download" => {
            let id = song_id(p.need("id")?)?;
            // Unknown songs get a Subsonic error, not an HTTP one.
            gw.session(id).await.map_err(|e| upstream(&e))?;
            return Ok(Reply::Raw(gw.stream_song(id, http_method, headers).await));
        }
        "getCoverArt" => {
            p.need("id")?;
            return Ok(Reply::Raw(
                (
                    [
                        (header::CONTENT_TYPE, "image/png"),
                        (header::CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    &include_bytes!("web/cover.png")[..],
                )
                    .into_response(),
            ));
        }
        "scrobble" => {
            let ids: Vec<SongId> = p.all("id").map(song_id).collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Err(missing("id"));
            }
            // `submission=false` only says what is playing now: not a play.
            if !p
                .get("submission")
                .is_some_and(|v| v.eq_ignore_ascii_case("false"))
            {
                let region = gw.client.config().region.clone();
                for id in ids {
                    tracker
                        .report_play(&medley_api::PlayReport::new(id, &region, None))
                        .await
                        .map_err(|e| upstream(&crate::tracker::unknown_song(id)(e)))?;
                }
            }
            json!({})
        }
        other => return Err(Failure(0, format!("unknown method {other:?}"))),
    };
    Ok(Reply::Body(body))
}

fn song_id(text: &str) -> Result<SongId, Failure> {
    text.parse()
        .map_err(|_| not_found(format_args!("song {text:?}")))
}

fn artist_id(name: &str) -> String {
    format!("ar-{}", hex::encode(name.to_lowercase()))
}

fn album_id(artist: &str, album: &str) -> String {
    format!(
        "al-{}-{}",
        hex::encode(artist.to_lowercase()),
        hex::encode(album.to_lowercase())
    )
}

fn unhex(h: &str) -> Option<String> {
    hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok())
}

fn parse_artist_id(id: &str) -> Result<String, Failure> {
    id.strip_prefix("ar-")
        .and_then(unhex)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| not_found(format_args!("artist {id:?}")))
}

fn parse_album_id(id: &str) -> Result<(String, String), Failure> {
    id.strip_prefix("al-")
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(a, b)| Some((unhex(a)?, unhex(b)?)))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| not_found(format_args!("album {id:?}")))
}

/// A song as Subsonic's `Child`.
fn child(
    id: &str,
    title: &str,
    artist: Option<&str>,
    album: Option<&str>,
    rest: &[(&str, Value)],
) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("isDir".into(), json!(false));
    m.insert("title".into(), json!(title));
    m.insert("type".into(), json!("music"));
    m.insert("mediaType".into(), json!("song"));
    m.insert("isVideo".into(), json!(false));
    if let Some(a) = artist {
        m.insert("artist".into(), json!(a));
        m.insert("artistId".into(), json!(artist_id(a)));
    }
    if let Some(al) = album {
        m.insert("album".into(), json!(al));
        if let Some(a) = artist {
            m.insert("albumId".into(), json!(album_id(a, al)));
            m.insert("parent".into(), json!(album_id(a, al)));
            m.insert("coverArt".into(), json!(album_id(a, al)));
        }
    }
    for (k, v) in rest {
        if !v.is_null() {
            m.insert((*k).into(), v.clone());
        }
    }
    let path = format!(
        "{}/{}/{}.{}",
        artist.unwrap_or("Unknown Artist"),
        album.unwrap_or("Unknown Album"),
        title,
        m.get("suffix").and_then(Value::as_str).unwrap_or("bin")
    );
    m.insert("path".into(), json!(path));
    Value::Object(m)
}

fn child_of_hit(h: &Hit) -> Value {
    let mime = h.mime.as_deref().unwrap_or("application/octet-stream");
    child(
        &h.id,
        &h.title,
        h.artist.as_deref(),
        h.album.as_deref(),
        &[
            ("track", json!(h.track)),
            ("year", json!(h.year)),
            ("genre", json!(h.genre)),
            ("duration", json!(h.duration_ms.map(|ms| ms / 1000))),
            ("bitRate", json!(h.bitrate.map(|b| b / 1000))),
            ("contentType", json!(mime)),
            ("suffix", json!(crate::play::ext_for(mime).unwrap_or("bin"))),
        ],
    )
}

/// Every song matching `params`, page by page, up to `max`.
async fn all_hits(gw: &Shared, mut params: SearchQuery, max: usize) -> Result<Vec<Hit>, Failure> {
    let mut out = Vec::new();
    loop {
        params.offset = out.len();
        params.limit = Some(100);
        let page = gw
            .client
            .tracker()
            .search(&params)
            .await
            .map_err(|e| upstream(&e.into()))?;
        let n = page.results.len();
        out.extend(page.results);
        if n < 100 || out.len() >= max || (!page.approximate && out.len() >= page.total) {
            break;
        }
    }
    out.truncate(max);
    Ok(out)
}

/// Albums of `hits` (by lowercased artist and album), in order of first appearance.
fn albums(hits: &[Hit]) -> Vec<(String, String, Vec<&Hit>)> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut by: BTreeMap<(String, String), (String, String, Vec<&Hit>)> = BTreeMap::new();
    for h in hits {
        let (Some(artist), Some(album)) = (&h.artist, &h.album) else {
            continue;
        };
        let key = (artist.to_lowercase(), album.to_lowercase());
        by.entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                (artist.clone(), album.clone(), Vec::new())
            })
            .2
            .push(h);
    }
    order.into_iter().filter_map(|k| by.remove(&k)).collect()
}

/// Subsonic's `AlbumID3` of an album's songs.
fn album_entry(artist: &str, album: &str, songs: &[&Hit]) -> Value {
    let duration: u64 = songs.iter().filter_map(|h| h.duration_ms).sum::<u64>() / 1000;
    let mut v = json!({
        "id": album_id(artist, album),
        "name": album,
        "title": album,
        "album": album,
        "artist": artist,
        "artistId": artist_id(artist),
        "coverArt": album_id(artist, album),
        "songCount": songs.len(),
        "duration": duration,
        "created": "1970-01-01T00:00:00Z",
        "isDir": true,
    });
    if let Some(y) = songs.iter().find_map(|h| h.year) {
        v["year"] = json!(y);
    }
    if let Some(g) = songs.iter().find_map(|h| h.genre.clone()) {
        v["genre"] = json!(g);
    }
    v
}

/// The index letter of an artist: its first letter after a leading article, else `#`.
fn index_letter(name: &str) -> String {
    let mut rest = name.trim();
    for article in IGNORED_ARTICLES.split(' ') {
        if let Some(r) = rest.strip_prefix(article)
            && r.starts_with(' ')
        {
            rest = r.trim_start();
            break;
        }
    }
    match rest.chars().next() {
        Some(c) if c.is_alphabetic() => c.to_uppercase().collect(),
        _ => "#".into(),
    }
}

async fn get_artists(gw: &Shared) -> Result<Value, Failure> {
    let mut artists = Vec::new();
    let mut after = String::new();
    loop {
        let page = gw
            .client
            .tracker()
            .artists(&after, 500)
            .await
            .map_err(|e| upstream(&e.into()))?;
        artists.extend(page.artists);
        match page.next {
            Some(n) if artists.len() < MAX_ARTISTS => after = n,
            _ => break,
        }
    }
    let mut index: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for a in &artists {
        index.entry(index_letter(&a.name)).or_default().push(json!({
            "id": artist_id(&a.name),
            "name": a.name,
            "albumCount": a.albums,
            "coverArt": artist_id(&a.name),
        }));
    }
    let index: Vec<Value> = index
        .into_iter()
        .map(|(name, artist)| json!({ "name": name, "artist": artist }))
        .collect();
    Ok(json!({ "artists": { "ignoredArticles": IGNORED_ARTICLES, "index": index } }))
}

async fn get_artist(gw: &Shared, id: &str) -> Result<Value, Failure> {
    let name = parse_artist_id(id)?;
    let hits = all_hits(
        gw,
        SearchQuery {
            artist: Some(name.clone()),
            ..SearchQuery::default()
        },
        MAX_ARTIST_SONGS,
    )
    .await?;
    let Some(display) = hits.iter().find_map(|h| h.artist.clone()) else {
        return Err(not_found(format_args!("artist {name:?}")));
    };
    let albums: Vec<Value> = albums(&hits)
        .iter()
        .map(|(artist, album, songs)| album_entry(artist, album, songs))
        .collect();
    Ok(json!({ "artist": {
        "id": artist_id(&display),
        "name": display,
        "coverArt": artist_id(&display),
        "albumCount": albums.len(),
        "album": albums,
    } }))
}

async fn get_album(gw: &Shared, id: &str) -> Result<Value, Failure> {
    let (artist, album) = parse_album_id(id)?;
    let mut hits = all_hits(
        gw,
        SearchQuery {
            artist: Some(artist.clone()),
            album: Some(album.clone()),
            ..SearchQuery::default()
        },
        MAX_ARTIST_SONGS,
    )
    .await?;
    if hits.is_empty() {
        return Err(not_found(format_args!("album {album:?} by {artist:?}")));
    }
    hits.sort_by(|a, b| {
        (a.track.unwrap_or(u16::MAX), &a.title).cmp(&(b.track.unwrap_or(u16::MAX), &b.title))
    });
    let refs: Vec<&Hit> = hits.iter().collect();
    let first = refs[0];
    let mut v = album_entry(
        first.artist.as_deref().unwrap_or(&artist),
        first.album.as_deref().unwrap_or(&album),
        &refs,
    );
    v["song"] = Value::Array(hits.iter().map(child_of_hit).collect());
    Ok(json!({ "album": v }))
}

/// `getMusicDirectory`: an artist is a folder of album folders, an album a folder of songs.
async fn music_directory(gw: &Shared, id: &str) -> Result<Value, Failure> {
    if id.starts_with("ar-") {
        let v = get_artist(gw, id).await?;
        let a = &v["artist"];
        let children: Vec<Value> = a["album"]
            .as_array()
            .map(|albums| {
                albums
                    .iter()
                    .map(|al| {
                        json!({
                            "id": al["id"], "parent": a["id"], "isDir": true,
                            "title": al["name"], "album": al["name"], "artist": al["artist"],
                            "coverArt": al["coverArt"], "year": al["year"],
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(json!({ "directory": { "id": a["id"], "name": a["name"], "child": children } }));
    }
    if id.starts_with("al-") {
        let v = get_album(gw, id).await?;
        let al = &v["album"];
        return Ok(json!({ "directory": {
            "id": al["id"], "name": al["name"], "parent": al["artistId"], "child": al["song"],
        } }));
    }
    Err(not_found(format_args!("directory {id:?}")))
}

async fn search3(gw: &Shared, p: &Params) -> Result<Value, Failure> {
    // Apps send `""` (quoted) or nothing to mean "everything"; the tracker needs words.
    let q = p
        .get("query")
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .trim()
        .to_string();
    let (song_count, song_offset) = (p.number("songCount", 20)?, p.number("songOffset", 0)?);
    let (artist_count, artist_offset) =
        (p.number("artistCount", 20)?, p.number("artistOffset", 0)?);
    let (album_count, album_offset) = (p.number("albumCount", 20)?, p.number("albumOffset", 0)?);
    let tracker = gw.client.tracker();
    // An empty query lists the whole catalogue, page by page: how apps sync a library.
    if q.is_empty() {
        let songs = if song_count == 0 {
            Vec::new()
        } else {
            tracker
                .songs_page(song_offset, song_count.min(500))
                .await
                .map_err(|e| upstream(&e.into()))?
                .songs
        };
        let wanted = (artist_offset + artist_count).min(500);
        let artists = if artist_count == 0 || artist_offset >= 500 {
            Vec::new()
        } else {
            tracker
                .artists("", wanted)
                .await
                .map_err(|e| upstream(&e.into()))?
                .artists
        };
        let artists: Vec<Value> = artists
            .iter()
            .skip(artist_offset)
            .take(artist_count)
            .map(|a| json!({ "id": artist_id(&a.name), "name": a.name, "coverArt": artist_id(&a.name), "albumCount": a.albums }))
            .collect();
        let albums: Vec<Value> = albums(&songs)
            .iter()
            .take(album_count)
            .map(|(artist, album, s)| album_entry(artist, album, s))
            .collect();
        return Ok(json!({ "searchResult3": {
            "artist": artists,
            "album": albums,
            "song": songs.iter().map(child_of_hit).collect::<Vec<_>>(),
        } }));
    }
    let songs = if song_count == 0 {
        Vec::new()
    } else {
        tracker
            .search(&SearchQuery {
                q: q.clone(),
                limit: Some(song_count.min(100)),
                offset: song_offset.min(10_000),
                ..SearchQuery::default()
            })
            .await
            .map_err(|e| upstream(&e.into()))?
            .results
    };
    // Artists and albums: those of the best matches.
    let top = tracker
        .search(&SearchQuery {
            q,
            limit: Some(100),
            ..SearchQuery::default()
        })
        .await
        .map_err(|e| upstream(&e.into()))?
        .results;
    let mut seen = std::collections::HashSet::new();
    let artists: Vec<Value> = top
        .iter()
        .filter_map(|h| h.artist.as_ref())
        .filter(|a| seen.insert(a.to_lowercase()))
        .skip(artist_offset)
        .take(artist_count)
        .map(
            |a| json!({ "id": artist_id(a), "name": a, "coverArt": artist_id(a), "albumCount": 0 }),
        )
        .collect();
    let albums: Vec<Value> = albums(&top)
        .iter()
        .skip(album_offset)
        .take(album_count)
        .map(|(artist, album, songs)| album_entry(artist, album, songs))
        .collect();
    Ok(json!({ "searchResult3": {
        "artist": artists,
        "album": albums,
        "song": songs.iter().map(child_of_hit).collect::<Vec<_>>(),
    } }))
}

fn envelope(status: &str, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), json!(status));
    m.insert("version".into(), json!(API_VERSION));
    m.insert("type".into(), json!("medley"));
    m.insert("serverVersion".into(), json!(env!("CARGO_PKG_VERSION")));
    m.insert("openSubsonic".into(), json!(true));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    json!({ "subsonic-response": Value::Object(m) })
}

fn ok_envelope(fields: Value) -> Value {
    envelope("ok", fields)
}

fn respond(format: Format, status: StatusCode, v: Value) -> Response {
    match format {
        Format::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
            if let Value::Object(m) = &v {
                for (name, value) in m {
                    xml_element(&mut out, name, value, true);
                }
            }
            (
                status,
                [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                out,
            )
                .into_response()
        }
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes `value` as XML: scalars are attributes, objects child elements, arrays repeated
/// child elements (the Subsonic mapping between its JSON and XML forms).
fn xml_element(out: &mut String, name: &str, value: &Value, root: bool) {
    match value {
        Value::Array(items) => {
            for item in items {
                xml_element(out, name, item, false);
            }
        }
        Value::Object(m) => {
            let _ = write!(out, "<{name}");
            if root {
                let _ = write!(out, " xmlns=\"{XMLNS}\"");
            }
            let mut children = Vec::new();
            for (k, v) in m {
                match v {
                    Value::Null => {}
                    Value::Object(_) | Value::Array(_) => children.push((k, v)),
                    Value::String(s) => {
                        let _ = write!(out, " {k}=\"{}\"", xml_escape(s));
                    }
                    other => {
                        let _ = write!(out, " {k}=\"{other}\"");
                    }
                }
            }
            if children.is_empty() {
                out.push_str("/>");
            } else {
                out.push('>');
                for (k, v) in children {
                    xml_element(out, k, v, false);
                }
                let _ = write!(out, "</{name}>");
            }
        }
        Value::Null => {}
        other => {
            let text = match other {
                Value::String(s) => xml_escape(s),
                v => v.to_string(),
            };
            let _ = write!(out, "<{name}>{text}</{name}>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        )
    }

    fn user() -> SubsonicUser {
        SubsonicUser {
            name: "ann".into(),
            password: "sesame".into(),
        }
    }

    #[test]
    fn token_password_and_hex_password_authenticate() {
        // The token of the Subsonic documentation's example: md5("sesame" + "c19b2d").
        let token = params(&[
            ("u", "ann"),
            ("t", "26719a1196d2a940705a59634eb18eab"),
            ("s", "c19b2d"),
        ]);
        authenticate(Some(&user()), &token).unwrap();
        authenticate(Some(&user()), &params(&[("u", "ann"), ("p", "sesame")])).unwrap();
        authenticate(
            Some(&user()),
            &params(&[
                ("u", "ann"),
                ("p", &format!("enc:{}", hex::encode("sesame"))),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn wrong_or_missing_credentials_get_the_spec_codes() {
        let code = |u: Option<&SubsonicUser>, p: &[(&str, &str)]| {
            authenticate(u, &params(p)).unwrap_err().0
        };
        assert_eq!(code(Some(&user()), &[("u", "ann"), ("p", "nope")]), 40);
        assert_eq!(code(Some(&user()), &[("u", "bob"), ("p", "sesame")]), 40);
        assert_eq!(
            code(Some(&user()), &[("u", "ann"), ("t", "00"), ("s", "c19b2d")]),
            40
        );
        assert_eq!(code(Some(&user()), &[("u", "ann"), ("p", "enc:zz")]), 40);
        assert_eq!(code(Some(&user()), &[("p", "sesame")]), 10);
        assert_eq!(code(Some(&user()), &[("u", "ann")]), 10);
        assert_eq!(code(None, &[("u", "ann"), ("p", "sesame")]), 50);
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(
            parse_artist_id(&artist_id("Björk & Co")).unwrap(),
            "björk & co"
        );
        assert_eq!(
            parse_album_id(&album_id("The Band", "Music from Big Pink")).unwrap(),
            ("the band".to_string(), "music from big pink".to_string())
        );
        for bad in ["", "ar-", "ar-zz", "al-00", "al-6162", "xx-6162"] {
            assert!(
                parse_artist_id(bad).is_err() || !bad.starts_with("ar-"),
                "{bad}"
            );
            assert_eq!(parse_album_id(bad).unwrap_err().0, 70, "{bad}");
        }
    }

    #[test]
    fn xml_mirrors_json() {
        let v = ok_envelope(json!({
            "artists": { "ignoredArticles": "The", "index": [
                { "name": "A", "artist": [ { "id": "ar-61", "name": "A<&>\"" }, { "id": "ar-62", "name": "B" } ] }
            ] }
        }));
        let mut out = String::new();
        if let Value::Object(m) = &v {
            for (k, val) in m {
                xml_element(&mut out, k, val, true);
            }
        }
        assert!(
            out.starts_with("<subsonic-response xmlns=\"http://subsonic.org/restapi\""),
            "{out}"
        );
        assert!(
            out.contains("status=\"ok\"") && out.contains("version=\"1.16.1\""),
            "{out}"
        );
        assert!(out.contains("<index name=\"A\"><artist id=\"ar-61\" name=\"A&lt;&amp;&gt;&quot;\"/><artist id=\"ar-62\" name=\"B\"/></index>"), "{out}");
        assert!(out.ends_with("</artists></subsonic-response>"), "{out}");
    }

    #[test]
    fn artists_are_indexed_by_letter_after_articles() {
        assert_eq!(index_letter("The Beatles"), "B");
        assert_eq!(index_letter("theremin"), "T");
        assert_eq!(index_letter("Los Lobos"), "L");
        assert_eq!(index_letter("émile"), "É");
        assert_eq!(index_letter("2Pac"), "#");
    }
}
