//! API.md must list exactly the routes the server has and every error code it sends.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::start;

const DOC: &str = include_str!("../../API.md");
const API_SRC: &str = include_str!("../../src/api.rs");

fn quoted(line: &str) -> Vec<&str> {
    line.split('"').skip(1).step_by(2).collect()
}

/// `(METHOD, path)` from the `.route("/path", get(handler).post(other))` calls of the
/// source, on one line or spread over several.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let flat: String = API_SRC.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split(".route(")
        .skip(1)
        .flat_map(|call| {
            // The call ends where the next builder method starts.
            let call = [".merge(", ".layer(", ".with_state(", ".route_layer("]
                .iter()
                .filter_map(|end| call.find(end))
                .fold(call, |c, at| &c[..at.min(c.len())]);
            let path = quoted(call)[0].to_string();
            ["get", "post", "delete"]
                .into_iter()
                .filter(move |m| {
                    call.contains(&format!(" {m}(")) || call.contains(&format!(".{m}("))
                })
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// `(METHOD, path)` from `### \`METHOD /path\`` headings of API.md.
fn routes_in_doc() -> BTreeSet<(String, String)> {
    DOC.lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .map(|l| {
            let l = l.trim_end_matches('`');
            let (m, p) = l.split_once(' ').unwrap();
            (m.to_string(), p.to_string())
        })
        .collect()
}

/// Error codes in the table of API.md's "Errors" section.
fn codes_in_doc() -> BTreeSet<String> {
    DOC.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(code, _)| code.to_string())
        .filter(|c| c.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect()
}

#[test]
fn doc_lists_exactly_the_routes_and_all_error_codes() {
    let src = routes_in_source();
    assert!(src.len() >= 10, "route parsing found only {src:?}");
    assert_eq!(
        routes_in_doc(),
        src,
        "API.md and src/api.rs disagree on routes"
    );
    // Every code the API can send (one enum, shared with its clients) is documented, and
    // nothing else is.
    let codes: BTreeSet<String> = medley_api::ErrorCode::all()
        .map(|c| c.as_str().to_string())
        .collect();
    assert!(
        codes.contains("bad_query") && codes.contains("no_route"),
        "{codes:?}"
    );
    assert_eq!(
        codes_in_doc(),
        codes,
        "API.md and medley_api::ErrorCode disagree"
    );
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    let id = "0".repeat(64);
    for (method, path) in routes_in_doc() {
        let url = format!("{}{}", t.url(), path.replace("{id}", &id));
        let r = match method.as_str() {
            "GET" => http.get(&url).send().await.unwrap(),
            "DELETE" => http.delete(&url).send().await.unwrap(),
            _ => http.post(&url).body("{}").send().await.unwrap(),
        };
        let status = r.status();
        let text = r.text().await.unwrap();
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        assert_ne!(
            code.as_deref(),
            Some("no_route"),
            "{method} {path} is documented but not served ({status})"
        );
    }
    t.shutdown(Duration::from_secs(5)).await;
}
