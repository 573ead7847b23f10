//! A client given several tracker URLs (replicas) fails over on connection errors and 5xx
//! answers, and keeps asking the one that answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use medley_api::TrackerClient;

use crate::support::start;

/// A URL nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// A server answering every request 503, and how many it got.
async fn failing_replica() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database down")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test]
async fn a_client_of_several_replicas_skips_dead_and_failing_ones_and_stays_with_one_that_answers()
{
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (start(dir_a.path()).await, start(dir_b.path()).await);
    let (failing, hits) = failing_replica().await;
    let dead = dead_url();

    // Dead, then failing, then a live one: answered by the live one.
    let client = TrackerClient::new(&format!("{dead}, {failing}/,{}", a.url())).unwrap();
    assert_eq!(client.urls().count(), 3);
    assert_eq!(client.url(), dead, "the first URL is asked first");
    client.stats().await.unwrap();
    assert_eq!(
        client.url(),
        a.url(),
        "the replica that answered is asked first now"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // From now on, straight to it: the failing one is not asked again.
    for _ in 0..3 {
        client.stats().await.unwrap();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The replica it stays with goes away: the next one answers, within the connect error.
    let client = TrackerClient::new(&format!("{},{}", a.url(), b.url())).unwrap();
    client.stats().await.unwrap();
    assert_eq!(client.url(), a.url());
    let a_url = a.url();
    a.shutdown(Duration::from_secs(5)).await;
    let started = std::time::Instant::now();
    client.stats().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.url(), b.url());
    assert_ne!(client.url(), a_url);

    // None answers: the error is the last replica's, and a client error (4xx) is not
    // retried elsewhere.
    let client = TrackerClient::new(&format!("{dead},{failing}")).unwrap();
    let e = client.stats().await.unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    let before = hits.load(Ordering::SeqCst);
    let client = TrackerClient::new(&format!("{},{failing}", b.url())).unwrap();
    let e = client
        .manifest("0".repeat(64).parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert_eq!(hits.load(Ordering::SeqCst), before, "a 404 is an answer");

    // An empty list is a configuration error.
    assert!(TrackerClient::new(" , ").is_err());
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn replicas_given_one_signing_key_sign_as_one_tracker() {
    use medley_tracker::{AdmissionMode, Tracker, TrackerConfig};
    let (a_dir, b_dir, keys) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let config = |dir: &std::path::Path, key: std::path::PathBuf| TrackerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        insecure_dev_admin: true,
        admission: AdmissionMode::Open,
        audit_interval_secs: 0,
        signing_key: Some(key),
        ..TrackerConfig::default()
    };
    // A key named but missing is an error naming the file: a replica never makes its own.
    let missing = keys.path().join("tracker.key");
    let Err(e) = Tracker::bind(config(a_dir.path(), missing.clone())).await else {
        panic!("a missing signing key is refused");
    };
    assert!(e.to_string().contains("tracker.key"), "{e}");
    assert!(!missing.exists(), "no key was made");

    // One replica's own key, copied to the file both name.
    let first = start(a_dir.path()).await;
    let own = TrackerClient::new(&first.url())
        .unwrap()
        .stats()
        .await
        .unwrap();
    first.shutdown(Duration::from_secs(5)).await;
    std::fs::copy(
        a_dir.path().join(medley_tracker::TRACKER_KEY_FILE),
        &missing,
    )
    .unwrap();
    let a = Tracker::bind(config(a_dir.path(), missing.clone()))
        .await
        .unwrap();
    let b = Tracker::bind(config(b_dir.path(), missing.clone()))
        .await
        .unwrap();
    let both = TrackerClient::new(&format!("{},{}", a.url(), b.url())).unwrap();
    let from_a = both.stats().await.unwrap().tracker_key;
    a.shutdown(Duration::from_secs(5)).await;
    let from_b = both.stats().await.unwrap().tracker_key;
    assert_eq!(from_a, own.tracker_key);
    assert_eq!(
        from_b, own.tracker_key,
        "the other replica signs with the same key"
    );
    b.shutdown(Duration::from_secs(5)).await;
}

/// A replica that accepts connections and never answers (a hung process).
async fn hung_replica() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

#[tokio::test]
async fn a_read_from_a_hung_replica_is_answered_by_another_after_the_hedge_delay() {
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path()).await;
    let hung = hung_replica().await;
    let client = TrackerClient::builder(&format!("{hung},{}", live.url()))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    client.stats().await.unwrap();
    let took = started.elapsed();
    assert!(took >= medley_api::HEDGE_AFTER, "{took:?}");
    assert!(
        took < medley_api::HEDGE_AFTER + Duration::from_secs(2),
        "a hung replica cost {took:?}, not the hedge delay"
    );
    assert_eq!(
        client.url(),
        live.url(),
        "the replica that answered is kept"
    );
    // Alone, the hung replica costs the whole timeout: nothing else can answer.
    let alone = TrackerClient::builder(&hung)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    assert!(alone.stats().await.is_err());
    assert!(started.elapsed() >= Duration::from_secs(2));
    live.shutdown(Duration::from_secs(5)).await;
}

/// A read sent on a kept-alive connection that the tracker closes at that moment (its idle
/// close crossing the request on the network) is sent again on a new connection, not
/// reported as a failure: with real latency this race happens in ordinary use.
#[tokio::test]
async fn a_read_that_meets_a_connection_the_tracker_is_closing_is_sent_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A real answer to serve back.
    let dir = tempfile::tempdir().unwrap();
    let real = start(dir.path()).await;
    let body = reqwest::get(format!("{}/v1/stats", real.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let first_connection = c.fetch_add(1, Ordering::SeqCst) == 0;
            let (r, body) = (r.clone(), body.clone());
            tokio::spawn(async move {
                let mut served = 0;
                let mut buf = vec![0u8; 8192];
                loop {
                    // One request's headers (the calls here have no body).
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    if first_connection && served == 1 {
                        // Closed as the second request arrived, unanswered.
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    served += 1;
                }
            });
        }
    });
    let client = TrackerClient::new(&url).unwrap();
    client.stats().await.unwrap();
    client
        .stats()
        .await
        .expect("sent again on a new connection");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "the read was sent twice"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}
