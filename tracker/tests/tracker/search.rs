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
        // One word in a long title and in an album of a song with a short title: the title
        // match ranks first (by length alone, BM25 would put the short song first).
        meta(
            "Vellichor of the Long Evening Tide",
            "Anselm Quell",
            "Harborlight",
            "Folk",
            2001,
        ),
        meta("Arcade", "Nerys Talwyn", "Vellichor", "Folk", 2001),
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
    // Fields weigh: a title match outranks an album match of the same word.
    assert_eq!(
        titles(&search(&http, &url, "q=vellichor").await),
        vec![
            "Vellichor of the Long Evening Tide".to_string(),
            "Arcade".to_string()
        ]
    );
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

#[tokio::test]
async fn browse_artists_random_songs_and_count_plays() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = t.url();
    let songs = catalogue();
    let mut ids = Vec::new();
    for m in songs.clone() {
        let m = manifest_for(m, 5_000, 4, 2, &publisher());
        let r = post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
        assert!(r.status().is_success());
        ids.push(m.id().to_string());
    }
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };

    // Artists, paged three at a time, case-insensitive name order, each once.
    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let r = http
            .get(format!("{url}/v1/browse/artists"))
            .query(&[("limit", "3"), ("after", after.as_str())])
            .send()
            .await
            .unwrap();
        let (status, v) = (r.status(), r.json::<Value>().await.unwrap());
        assert_eq!(status, StatusCode::OK, "{v}");
        for a in v["artists"].as_array().unwrap() {
            listed.push((
                a["name"].as_str().unwrap().to_string(),
                a["songs"].as_u64().unwrap(),
                a["albums"].as_u64().unwrap(),
            ));
        }
        match v["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let mut expected: Vec<String> = songs
        .iter()
        .filter_map(|s| s.artist.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    expected.sort_by_key(|a| a.to_lowercase());
    let names: Vec<String> = listed.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(names, expected);
    let band = listed
        .iter()
        .find(|(n, _, _)| n == "Ostinato Band")
        .unwrap();
    assert_eq!((band.1, band.2), (25, 1), "songs and albums of one artist");
    for bad in ["limit=0", "limit=501", "limit=x", "other=1"] {
        let (status, v) = get(format!("{url}/v1/browse/artists?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "bad_query");
    }

    // Random songs: distinct, from the catalogue, of the genre asked for.
    let (status, v) = get(format!("{url}/v1/browse/random?size=20")).await;
    assert_eq!(status, StatusCode::OK);
    let picked: Vec<String> = v["songs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(picked.len(), 20);
    assert_eq!(
        picked.iter().collect::<HashSet<_>>().len(),
        20,
        "no repeats"
    );
    assert!(picked.iter().all(|id| ids.contains(id)));
    let (_, v) = get(format!("{url}/v1/browse/random?size=100&genre=ambient")).await;
    let ambient = v["songs"].as_array().unwrap();
    let expected_ambient = songs
        .iter()
        .filter(|s| s.genre.as_deref() == Some("Ambient"))
        .count();
    assert_eq!(ambient.len(), expected_ambient, "every Ambient song, once");
    assert!(ambient.iter().all(|s| s["genre"] == "Ambient"));
    let (status, _) = get(format!("{url}/v1/browse/random?size=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Every song, paged in id order.
    let mut all = Vec::new();
    loop {
        let (status, v) = get(format!(
            "{url}/v1/browse/songs?limit=7&offset={}",
            all.len()
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["total"], ids.len());
        let page = v["songs"].as_array().unwrap();
        all.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_string()));
        if page.len() < 7 {
            break;
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(all, sorted, "every song once, in id order");
    for bad in ["limit=0", "limit=501", "offset=-1"] {
        let (status, _) = get(format!("{url}/v1/browse/songs?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Search results carry the track, MIME type and bitrate.
    let (_, v) = get(format!("{url}/v1/search?q=lampwick")).await;
    let hit = &v["results"][0];
    assert_eq!(
        (&hit["track"], &hit["mime"], &hit["bitrate"]),
        (
            &Value::from(1),
            &Value::from("audio/ogg"),
            &Value::from(160_000)
        )
    );

    // Plays: counted per region (of the regions nodes are in; others count as "other"),
    // persisted; bad reports change nothing.
    for (i, region) in ["eu", "us"].iter().enumerate() {
        let r = http
            .post(format!("{url}/v1/nodes/register"))
            .json(&serde_json::json!({
                "peer_id": format!("node-{i}"),
                "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 7000 + i)],
                "region": region,
                "capacity": 1u64 << 30,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let play = |body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}/v1/plays"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let song = &ids[0];
    for (region, n) in [("eu", 1), ("eu", 2), ("us", 1), ("atlantis", 1), ("mu", 2)] {
        let (status, v) = play(format!(r#"{{"song":"{song}","region":"{region}"}}"#)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["plays_in_region"], n, "{region}");
    }
    for (body, status, code) in [
        (
            format!(r#"{{"song":"{}","region":"eu"}}"#, "0".repeat(64)),
            StatusCode::NOT_FOUND,
            "unknown_song",
        ),
        (
            format!(r#"{{"song":"{song}","region":""}}"#),
            StatusCode::BAD_REQUEST,
            "bad_play",
        ),
        (
            format!(r#"{{"song":"{song}","region":"{}"}}"#, "x".repeat(65)),
            StatusCode::BAD_REQUEST,
            "bad_play",
        ),
        (
            r#"{"song":"zz","region":"eu"}"#.to_string(),
            StatusCode::BAD_REQUEST,
            "bad_id",
        ),
        ("{".to_string(), StatusCode::BAD_REQUEST, "malformed_json"),
    ] {
        let (s, v) = play(body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }
    t.shutdown(Duration::from_secs(5)).await;
    let t = start(dir.path()).await;
    let (_, v) = get(format!("{}/v1/songs/{song}", t.url())).await;
    assert_eq!(v["plays"], 5);
    assert_eq!(v["plays_by_region"]["eu"], 2);
    assert_eq!(v["plays_by_region"]["us"], 1);
    assert_eq!(
        v["plays_by_region"]["other"], 2,
        "regions without nodes: {v}"
    );
    t.shutdown(Duration::from_secs(5)).await;
}
