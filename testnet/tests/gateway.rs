//! End to end: `medley serve` in front of a loopback testnet (tracker and six nodes as real
//! processes), read by real clients: reqwest for RFC 9110 ranges, ffprobe and ffmpeg over
//! HTTP, py-sonic (a Subsonic client library from PyPI) and headless Chromium driven through
//! chromedriver. Also `medley play a b` as one gapless stream.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, publish, published, reference_wav};
use medley_testnet::Testnet;
use medley_testnet::library::{LibrarySong, generate};
use serde_json::{Value, json};

const USER: &str = "ann";
const PASSWORD: &str = "open sesame";
const SEGMENT: u64 = 256 * 1024;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `medley serve` on a free loopback port; returns it and its base URL.
fn serve(net: &Testnet) -> (Proc, String) {
    let mut child = net
        .medley("eu-west", false)
        .args(["serve", "--listen", "127.0.0.1:0", "--subsonic-user", USER])
        .env("MEDLEY_SUBSONIC_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start medley serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the gateway's address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (proc, url)
}

struct Song {
    id: String,
    path: PathBuf,
    lib: LibrarySong,
}

async fn network(
    songs: usize,
    seed: u64,
    (min_s, max_s): (f64, f64),
) -> (Testnet, tempfile::TempDir, Vec<Song>) {
    let net = Testnet::builder()
        .nodes(6)
        .regions(3)
        .log("info,libp2p=warn")
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let library = generate(&dir.path().join("lib"), songs, seed, min_s, max_s).unwrap();
    let lines = publish(&net, &dir.path().join("lib"));
    let mut out = Vec::new();
    for (id, path) in published(&lines) {
        let lib = library
            .iter()
            .find(|s| s.path == path)
            .expect("a published file is from the library")
            .clone();
        out.push(Song {
            id: id.to_string(),
            path,
            lib,
        });
    }
    assert_eq!(out.len(), songs, "every song is published");
    (net, dir, out)
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = http.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    (status, h, body)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    serde_json::from_str(&get_text(http, url).await).unwrap()
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = get_text(http, &format!("{base}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The MD5 of the PCM ffmpeg decodes from `input` (a file or a URL).
fn ffmpeg_md5(input: &str) -> String {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", input])
        .args(["-f", "md5", "-"]))
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_ranges_ffmpeg_and_subsonic() {
    let (net, dir, songs) = network(3, 71, (50.0, 70.0)).await;
    let (_gw, base) = serve(&net);
    let http = reqwest::Client::new();
    let song = &songs[0];
    let src = std::fs::read(&song.path).unwrap();
    let len = src.len() as u64;
    assert!(
        len > 3 * SEGMENT,
        "the song spans several segments ({len} bytes)"
    );
    let url = format!("{base}/stream/{}", song.id);

    // A suffix range on a fresh gateway fetches only the last segment.
    let (status, h, body) = get(&http, &url, &[("range", "bytes=-500")]).await;
    assert_eq!(status, 206);
    assert_eq!(body, src[src.len() - 500..]);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes {}-{}/{len}", len - 500, len - 1)
    );
    assert_eq!(
        metric(&http, &base, "medley_gateway_cache_misses_total").await,
        1,
        "a range at the end fetches one segment, not the song"
    );

    // The whole file, byte for byte, with the headers players need.
    let (status, h, body) = get(&http, &url, &[]).await;
    assert_eq!(status, 200);
    assert!(body == src, "the stream is the published file");
    assert_eq!(header(&h, "content-type"), "audio/flac");
    assert_eq!(header(&h, "content-length"), len.to_string());
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    let etag = header(&h, "etag").to_string();
    assert_eq!(etag, format!("\"{}\"", song.id));
    // No sniffing of a publisher's bytes, and a policy that lets the page load only itself.
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert!(header(&h, "content-security-policy").contains("default-src 'self'"));
    // What a web page can do against a gateway on this machine: rebind its own name to
    // 127.0.0.1 and read the API, or post a form: both refused, and nothing counted.
    for path in [
        "/api/search?q=a",
        "/metrics",
        &format!("/stream/{}", song.id),
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .header("host", "evil.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
    }
    let plays_before = net
        .tracker()
        .unwrap()
        .song(song.id.parse().unwrap())
        .await
        .unwrap()
        .plays;
    for ct in ["application/x-www-form-urlencoded", "text/plain"] {
        let r = http
            .post(format!("{base}/api/songs/{}/played", song.id))
            .header("content-type", ct)
            .body("a=1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 415, "{ct}");
    }
    assert_eq!(
        net.tracker()
            .unwrap()
            .song(song.id.parse().unwrap())
            .await
            .unwrap()
            .plays,
        plays_before,
        "a form post counts no play"
    );

    // RFC 9110 ranges: start, across a segment boundary, end, open-ended, suffix, clamped.
    let mid = SEGMENT * 2 - 300;
    for (range, from, to) in [
        ("bytes=0-99".to_string(), 0, 99),
        (format!("bytes={mid}-{}", mid + 999), mid, mid + 999),
        (
            format!("bytes={}-{}", len - 1000, len - 1),
            len - 1000,
            len - 1,
        ),
        (format!("bytes={}-", len * 9 / 10), len * 9 / 10, len - 1),
        ("bytes=-777".to_string(), len - 777, len - 1),
        (format!("bytes=10-{}", len + 5000), 10, len - 1),
        ("bytes=0-0".to_string(), 0, 0),
    ] {
        let (status, h, body) = get(&http, &url, &[("range", &range)]).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            header(&h, "content-range"),
            format!("bytes {from}-{to}/{len}"),
            "{range}"
        );
        assert_eq!(header(&h, "content-length"), (to - from + 1).to_string());
        assert!(
            body == src[from as usize..=to as usize],
            "{range}: wrong bytes"
        );
    }
    // Unsatisfiable: 416 with the length.
    for range in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 10, len + 20),
        "bytes=-0".into(),
    ] {
        let (status, h, body) = get(&http, &url, &[("range", &range)]).await;
        assert_eq!(status, 416, "{range}");
        assert_eq!(header(&h, "content-range"), format!("bytes */{len}"));
        assert!(body.is_empty());
    }
    // Ignored (the whole file): malformed, another unit, several ranges, a stale If-Range.
    for headers in [
        vec![("range", "bytes=5-2")],
        vec![("range", "items=0-10")],
        vec![("range", "bytes=0-1,5-6")],
        vec![("range", "bytes=0-99"), ("if-range", "\"something-else\"")],
    ] {
        let (status, _, body) = get(&http, &url, &headers).await;
        assert_eq!(status, 200, "{headers:?}");
        assert!(body == src, "{headers:?}");
    }
    let (status, _, body) = get(&http, &url, &[("range", "bytes=0-99"), ("if-range", &etag)]).await;
    assert_eq!((status, body.len()), (206, 100));
    // HEAD: the headers, no body.
    let resp = http.head(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(resp.headers(), "content-length"), len.to_string());
    // Unknown and malformed ids.
    let (status, _, body) = get(&http, &format!("{base}/stream/{}", "ab".repeat(32)), &[]).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = get(&http, &format!("{base}/stream/not-an-id"), &[]).await;
    assert_eq!(status, 400);

    // ffprobe and ffmpeg read and fully decode the stream, to the same samples as the file.
    let probe: Value = serde_json::from_str(&run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(&url)))
    .unwrap();
    assert_eq!(probe["streams"][0]["codec_name"], "flac");
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - song.lib.seconds).abs() < 0.5,
        "ffprobe says {duration} s, the song is {} s",
        song.lib.seconds
    );
    assert_eq!(ffmpeg_md5(&url), ffmpeg_md5(song.path.to_str().unwrap()));
    // Decoding from the middle: ffmpeg seeks with a Range request.
    let partial_before = metric(&http, &base, "medley_gateway_stream_partial_total").await;
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-ss", "15", "-i"])
        .arg(&url)
        .args(["-f", "null", "-"]));
    assert!(metric(&http, &base, "medley_gateway_stream_partial_total").await > partial_before);
    // Where the bytes came from: all rebuilt from shards or from the gateway's cache here.
    let rebuilt = metric(
        &http,
        &base,
        "medley_gateway_delivered_bytes_total{source=\"rebuilt\"}",
    )
    .await;
    let size = std::fs::metadata(&song.path).unwrap().len();
    assert!(
        rebuilt >= size,
        "{rebuilt} bytes rebuilt for a {size} byte song"
    );
    // Both kinds of start are in the first-byte histogram.
    for from in ["start", "seek"] {
        let name = format!("medley_gateway_stream_first_byte_seconds_count{{from=\"{from}\"}}");
        assert!(metric(&http, &base, &name).await > 0, "{name}");
    }

    // A real Subsonic client library.
    let port = base.rsplit(':').next().unwrap().to_string();
    let word = song
        .lib
        .song
        .title
        .split_whitespace()
        .max_by_key(|w| w.len())
        .unwrap()
        .to_string();
    let streamed = dir.path().join("subsonic.stream");
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/subsonic_client.py"))
        .args(["http://127.0.0.1", &port, USER, PASSWORD, &word])
        .arg(&streamed)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "py-sonic failed (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ping"], true);
    assert_eq!(r["license"]["valid"], true);
    assert_eq!(r["folders"][0]["id"], 1);
    assert!(
        r["search_songs"]
            .as_array()
            .unwrap()
            .contains(&json!(song.id)),
        "search3 {word:?} finds the song: {r}"
    );
    let streamed_id = r["stream"]["id"].as_str().unwrap();
    let streamed_src = &songs.iter().find(|s| s.id == streamed_id).unwrap().path;
    assert!(
        std::fs::read(&streamed).unwrap() == std::fs::read(streamed_src).unwrap(),
        "the Subsonic stream is byte-identical to the source"
    );
    let played = songs.iter().find(|s| s.id == streamed_id).unwrap();
    assert_eq!(r["album"]["name"], played.lib.song.album.as_str());
    assert!(
        r["album"]["songs"]
            .as_array()
            .unwrap()
            .contains(&json!(played.id))
    );
    assert_eq!(r["artist"]["name"], played.lib.song.artist.as_str());
    assert!(
        r["artist"]["albums"]
            .as_array()
            .unwrap()
            .contains(&json!(played.lib.song.album))
    );
    let mut artists: Vec<String> = songs.iter().map(|s| s.lib.song.artist.clone()).collect();
    artists.sort();
    artists.dedup();
    let mut listed: Vec<String> = r["artists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, artists, "getArtists lists every artist once");
    assert_eq!(
        r["folder_songs"], r["album"]["songs"],
        "the folder view holds the album's songs"
    );
    assert_eq!(r["song"]["id"], played.id.as_str());
    assert_eq!(r["song"]["title"], played.lib.song.title.as_str());
    assert_eq!(
        r["song"]["size"],
        std::fs::metadata(&played.path).unwrap().len()
    );
    assert_eq!(r["song"]["contentType"], "audio/flac");
    let mut random: Vec<&str> = r["random"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    random.sort();
    let mut all: Vec<&str> = songs.iter().map(|s| s.id.as_str()).collect();
    all.sort();
    assert_eq!(random, all, "50 random songs of 3 are all 3, once each");
    let mut synced: Vec<&str> = r["sync_songs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    synced.sort();
    assert_eq!(
        synced, all,
        "search3 with an empty query lists every song once"
    );
    assert_eq!(r["sync_artists"].as_array().unwrap().len(), artists.len());
    assert_eq!(r["cover_png"], true);
    assert_eq!(r["scrobble"], "ok");
    assert_eq!(r["unknown_song"], "DataNotFoundError");
    assert_eq!(r["bad_password"], "CredentialError");
    // The scrobble reached the tracker as a play in the gateway's region.
    let info = get_json(
        &http,
        &format!("{}/v1/songs/{}", net.tracker_url(), played.id),
    )
    .await;
    assert_eq!(info["plays"], 1);
    assert_eq!(info["plays_by_region"]["eu-west"], 1);

    // XML by default; errors carry the spec's codes.
    let auth = format!("u={USER}&p={}", PASSWORD.replace(' ', "%20"));
    let xml = http
        .get(format!("{base}/rest/ping.view?{auth}&v=1.16.1&c=test"))
        .send()
        .await
        .unwrap();
    assert!(header(xml.headers(), "content-type").starts_with("text/xml"));
    let xml = xml.text().await.unwrap();
    assert!(
        xml.contains("<subsonic-response xmlns=\"http://subsonic.org/restapi\"")
            && xml.contains("status=\"ok\""),
        "{xml}"
    );
    for (query, code) in [
        (format!("getSong?{auth}&f=json"), 10),
        (format!("getSong?{auth}&f=json&id=nope"), 70),
        (format!("getAlbum?{auth}&f=json&id=al-00-00"), 70),
        ("ping?u=ann&p=wrong&f=json".to_string(), 40),
        ("ping?f=json".to_string(), 10),
    ] {
        let v = get_json(&http, &format!("{base}/rest/{query}")).await;
        let resp = &v["subsonic-response"];
        assert_eq!(resp["status"], "failed", "{query}: {v}");
        assert_eq!(resp["error"]["code"], code, "{query}: {v}");
    }
    // A Subsonic stream takes a Range too.
    let (status, _, body) = get(
        &http,
        &format!("{base}/rest/stream.view?{auth}&id={}", song.id),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(status, 206);
    assert!(body == src[100..200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn play_queues_songs_without_a_gap() {
    let (net, dir, songs) = network(2, 72, (20.0, 30.0)).await;
    let wav = dir.path().join("queue.wav");
    let out = ok(net
        .medley("us-east", false)
        .args(["play", &songs[0].id, &songs[1].id, "--json", "--out"])
        .arg(&wav));
    let outcomes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0]["id"], songs[0].id.as_str());
    assert_eq!(outcomes[1]["id"], songs[1].id.as_str());
    // The WAV holds the first song's samples and then the second's, nothing between.
    let data = |w: &[u8]| w[44..].to_vec();
    let mut expected = data(&reference_wav(&songs[0].path, dir.path()));
    expected.extend(data(&reference_wav(&songs[1].path, dir.path())));
    let got = std::fs::read(&wav).unwrap();
    assert_eq!(got.len() - 44, expected.len(), "sample count of the queue");
    assert!(
        data(&got) == expected,
        "the queue is the two songs back to back"
    );
    // `--results` queues search results; an unknown id fails before any sound.
    let unknown = "cd".repeat(32);
    let err = common::fails(
        net.medley("us-east", false)
            .args(["play", &songs[0].id, &unknown, "--out"])
            .arg(dir.path().join("never.wav")),
    );
    assert!(err.contains("no song"), "{err}");
    assert!(!dir.path().join("never.wav").exists());
}

/// A W3C WebDriver session with chromedriver.
struct Browser {
    http: reqwest::Client,
    url: String,
    _driver: Proc,
}

impl Browser {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Proc(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (scripts/test.sh installs chromium-driver)"),
        );
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        } } } });
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"));
        Self {
            http,
            url: format!("{base}/session/{id}"),
            _driver: driver,
        }
    }

    async fn cmd(&self, path: &str, body: Value) -> Value {
        let v: Value = self
            .http
            .post(format!("{}/{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["value"].get("error").is_none(), "{path}: {v}");
        v["value"].clone()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd("element", json!({ "using": "css selector", "value": css }))
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd("execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Polls `script` until it returns true.
    async fn until(&self, secs: u64, what: &str, script: &str) {
        let start = Instant::now();
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            let state = self
                .js("const a = document.querySelector('#audio'); return {t: a.currentTime, err: a.error && a.error.code, status: document.querySelector('#status').textContent, rows: document.querySelectorAll('#results tr.song').length};")
                .await;
            assert!(
                start.elapsed().as_secs() < secs,
                "timed out waiting for {what}: {state}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn close(&self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_player_searches_plays_and_seeks_in_chromium() {
    let (net, _dir, songs) = network(2, 73, (30.0, 40.0)).await;
    let (_gw, base) = serve(&net);
    let browser = Browser::start().await;
    browser
        .cmd("url", json!({ "url": format!("{base}/") }))
        .await;
    let song = &songs[0].lib.song;
    let search = browser.find("#search").await;
    browser
        .cmd(
            &format!("element/{search}/value"),
            json!({ "text": song.title }),
        )
        .await;
    browser
        .until(
            20,
            "search results",
            "return document.querySelectorAll('#results tr.song').length > 0",
        )
        .await;
    let play = browser
        .find(&format!(
            "#results tr.song[data-id='{}'] button.play",
            songs[0].id
        ))
        .await;
    browser
        .cmd(&format!("element/{play}/click"), json!({}))
        .await;
    browser
        .until(
            30,
            "playback to advance",
            "const a = document.querySelector('#audio'); return a.error === null && !a.paused && a.currentTime > 1.0;",
        )
        .await;
    let title = browser
        .js("return document.querySelector('#now-title').textContent")
        .await;
    assert_eq!(title, json!(song.title));
    // Seek to 60 % with the slider, as a listener drags it.
    let target = songs[0].lib.seconds * 0.6;
    browser
        .js(&format!(
            "const s = document.querySelector('#seek'); s.value = '{target}'; s.dispatchEvent(new Event('change')); return true;"
        ))
        .await;
    browser
        .until(
            30,
            "the seek to land and play on",
            &format!(
                "const a = document.querySelector('#audio'); return a.error === null && !a.paused && a.currentTime > {} && a.currentTime < {};",
                target + 0.5,
                target + 5.0
            ),
        )
        .await;
    // Where the bytes came from is shown.
    browser
        .until(
            10,
            "the delivery line",
            "return document.querySelector('#delivery').textContent.includes('rebuilt from shards');",
        )
        .await;
    browser.close().await;
}
