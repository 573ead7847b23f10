use std::collections::HashSet;
use std::time::Duration;

use medley_core::SongMeta;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{manifest_for, post_body, publisher, start};

fn meta(title: &str, artist: &str, album: &str, genre: &str, year: u16) -> SongMeta {
    SongMeta {
        title: title.into(),
        artist: Some(artist.into()),
        album: Some(album.into()),
        genre: Some(genre.into()),
        year: Some(year),
        track: Some(1),
        duration_ms: Some(180_000),
        codec: "vorbis".into(),
        mime: "audio/ogg".into(),
        bitrate: Some(160_000),
    }
}

fn catalogue() -> Vec<SongMeta> {
    // Target songs use words the synthetic generator never produces, so rankings are exact.
    let mut songs = vec![
        meta(
            "Lampwick Serenade",
            "The Quokka Brigade",
            "Aurora Cantata",
            "Indie",
            2019,
        ),
        meta(
            "Zephyrine Engine",
            "Marguerite Lindqvoss",
            "Cobalt Meridian",
            "Jazz",
            1999,
        ),
        meta("Quietude Bayou", "Kwabena Oduya", "Tidewater", "Folk", 2005),
        meta(
            "Bayou Nocturne",
            "Ottoline Frasque",
            "Marsh Psalms",
            "Blues",
            2019,
        ),
    ];
    for n in 0..25 {
        songs.push(meta(
            &format!("Ostinato {n}"),
            "Ostinato Band",
            "Ostinati",
            "Ambient",
            2010,
        ));
    }
    // Background: a seeded synthetic catalogue.
    for s in medley_synth::catalog(medley_synth::CatalogSpec { songs: 40, seed: 5 }) {
        songs.push(meta(&s.title, &s.artist, &s.album, &s.genre, s.year));
    }
    songs
}

async fn search(http: &reqwest::Client, url: &str, query: &str) -> Value {
    let r = http
        .get(format!("{url}/v1/search?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    r.json().await.unwrap()
}

fn titles(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn search_by_field_with_typos_prefixes_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = t.url();
    for m in catalogue() {
        let m = manifest_for(m, 5_000, 4, 2, &publisher());
        let r = post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
        assert!(r.status().is_success());
    }

    // Each field.
    assert_eq!(
        titles(&search(&http, &url, "q=lampwick").await),
        vec!["Lampwick Serenade".to_string()]
    );
    assert_eq!(
        titles(&search(&http, &url, "q=quokka+brigade").await)[0],
        "Lampwick Serenade"
    );
    assert_eq!(
        titles(&search(&http, &url, "q=aurora+cantata").await)[0],
        "Lampwick Serenade"
    );
    assert!(titles(&search(&http, &url, "q=jazz").await).contains(&"Zephyrine Engine".to_string()));
    // Typos: one letter changed, one letter doubled.
    assert_eq!(
        titles(&search(&http, &url, "q=lindkvoss").await)[0],
        "Zephyrine Engine"
    );
    assert_eq!(
        titles(&search(&http, &url, "q=quokka+brigadde").await)[0],
        "Lampwick Serenade"
    );
    // Search as you type: the first letters of the last word.
    assert_eq!(
        titles(&search(&http, &url, "q=zephy").await)[0],
        "Zephyrine Engine"
    );
    assert_eq!(
        titles(&search(&http, &url, "q=quietude+bay").await)[0],
        "Quietude Bayou"
    );

    // Filters: year range, artist (case-insensitive), genre.
    assert_eq!(search(&http, &url, "q=bayou").await["total"], 2);
    let r = search(&http, &url, "q=bayou&year_from=2000&year_to=2010").await;
    assert_eq!(titles(&r), vec!["Quietude Bayou".to_string()]);
    let r = search(&http, &url, "artist=marguerite+LINDQVOSS").await;
    assert_eq!(titles(&r), vec!["Zephyrine Engine".to_string()]);
    let r = search(&http, &url, "genre=blues&q=bayou").await;
    assert_eq!(titles(&r), vec!["Bayou Nocturne".to_string()]);

    // Pagination and counts.
    let p1 = search(&http, &url, "q=ostinato&limit=10").await;
    assert!(p1["total"].as_u64().unwrap() >= 25);
    let total = p1["total"].as_u64().unwrap() as usize;
    let p3 = search(&http, &url, "q=ostinato&limit=10&offset=20").await;
    assert_eq!(p3["results"].as_array().unwrap().len(), total - 20);
    let mut seen = HashSet::new();
    for offset in [0, 10, 20] {
        let p = search(&http, &url, &format!("q=ostinato&limit=10&offset={offset}")).await;
        for h in p["results"].as_array().unwrap() {
            assert!(
                seen.insert(h["id"].as_str().unwrap().to_string()),
                "a song on two pages"
            );
        }
    }
    assert_eq!(seen.len(), total);

    // Bad queries.
    for bad in [
        "q=x&limit=0",
        "q=x&limit=1000",
        "q=x&year_from=abc",
        "q=x&colour=red",
        "",
    ] {
        let r = http
            .get(format!("{url}/v1/search?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_query", "{bad}");
    }
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn index_is_rebuilt_from_the_catalogue_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    for m in catalogue().into_iter().take(3) {
        let m = manifest_for(m, 5_000, 4, 2, &publisher());
        post_body(
            &http,
            &format!("{}/v1/publish", t.url()),
            m.encoded().to_vec(),
        )
        .await;
    }
    t.shutdown(Duration::from_secs(5)).await;

    // Restart: still searchable.
    let t = start(dir.path()).await;
    assert_eq!(
        titles(&search(&http, &t.url(), "q=lampwick").await),
        vec!["Lampwick Serenade".to_string()]
    );
    t.shutdown(Duration::from_secs(5)).await;

    // Delete the index while stopped: rebuilt at start from RocksDB.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let t = start(dir.path()).await;
    assert_eq!(
        titles(&search(&http, &t.url(), "q=oduya").await),
        vec!["Quietude Bayou".to_string()]
    );
    let all = search(&http, &t.url(), "year_from=1900").await;
    assert_eq!(all["total"], 3, "each song indexed once");

    // A damaged index is also rebuilt.
    t.shutdown(Duration::from_secs(5)).await;
    std::fs::write(dir.path().join("index").join("meta.json"), b"{ not json").unwrap();
    let t = start(dir.path()).await;
    assert_eq!(search(&http, &t.url(), "year_from=1900").await["total"], 3);
    t.shutdown(Duration::from_secs(5)).await;
}
