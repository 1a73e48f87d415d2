//! The HTTP API in-process: a real store in a temporary directory, the real
//! router on a real socket, requests by reqwest. Authentication and scopes,
//! problems, audio, deletion, paging, the OpenAPI document against the
//! routes, and generated inputs on every operation (no 5xx).

use std::path::{Path, PathBuf};

use ivm::api::{ApiConfig, ApiState};
use ivm::domain::MessageCode;
use ivm::store::api::Scope;
use ivm::store::{NewMessage, NewUser, Store, StoreHandle};
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::Value;

struct Api {
    base: String,
    data_dir: PathBuf,
    read: String,
    admin: String,
    client: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// A message from `from` to `to` with code `code`, its files on disk.
fn add_message(store: &mut Store, data_dir: &Path, from: &str, to: &str, code: &str) -> i64 {
    let name = format!("messages/{from}-{to}-{code}.sln");
    std::fs::create_dir_all(data_dir.join("messages")).unwrap();
    std::fs::write(data_dir.join(&name), [1u8, 0, 2, 0]).unwrap();
    let id = store
        .create_message(&NewMessage {
            sender: from,
            group_number: None,
            audio_format: "sln",
            sample_rate: 8000,
            audio_path: &name,
            targets: vec![("extension", to, code)],
        })
        .unwrap();
    let wav = name.replace(".sln", ".wav");
    // Any bytes: the API must hand back the stored file as it is.
    let bytes: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data_dir.join(&wav), &bytes).unwrap();
    store.set_wav_path(id, &wav).unwrap();
    store
        .set_message_state(id, ivm::domain::MessageState::Complete, Some(1000))
        .unwrap();
    id.0
}

async fn api(messages: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut store = Store::open(&data_dir).unwrap();
    for (ext, name) in [("1001", "Alice"), ("1002", "Bob")] {
        store
            .add_user(&NewUser {
                extension: ext,
                name,
                mobile: None,
                pin: None,
            })
            .unwrap();
    }
    store
        .add_group("7001", Some("Team"), &["1001".into(), "1002".into()], 50)
        .unwrap();
    for i in 0..messages {
        let (from, to) = if i % 2 == 0 {
            ("1001", "1002")
        } else {
            ("1002", "1001")
        };
        add_message(&mut store, &data_dir, from, to, &format!("{:04}", i));
    }
    let (_, read) = store.create_token("reader", Scope::Read).unwrap();
    let (_, admin) = store.create_token("admin", Scope::Admin).unwrap();
    let handle = StoreHandle::spawn(store).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let (address, _task) = ivm::api::start(
        &config,
        ApiState {
            store: handle,
            data_dir: data_dir.clone(),
            status_changed: None,
        },
        stopped,
    )
    .await
    .unwrap();
    Api {
        base: format!("http://{address}"),
        data_dir,
        read,
        admin,
        client: reqwest::Client::new(),
        _stop: stop,
        _dir: dir,
    }
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, Some(&self.read), None)
            .await
    }
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

#[tokio::test]
async fn without_a_token_401_with_a_wrong_or_revoked_one_401() {
    let api = api(1).await;
    let r = api
        .send(reqwest::Method::GET, "/api/v1/messages", None, None)
        .await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"ivm\"");
    problem(r, StatusCode::UNAUTHORIZED).await;
    // The scheme is case-insensitive.
    let r = api
        .client
        .get(format!("{}/api/v1/users", api.base))
        .header("authorization", format!("bearer {}", api.read))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let forged = format!("ivm_{}", "0".repeat(64));
    for token in [forged.as_str(), "nonsense", ""] {
        let r = api
            .send(reqwest::Method::GET, "/api/v1/users", Some(token), None)
            .await;
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    let r = api.send(reqwest::Method::GET, "/metrics", None, None).await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    // The dashboard, health and the document are public.
    for path in ["/", "/healthz", "/openapi.json", "/dashboard.js"] {
        let r = api.send(reqwest::Method::GET, path, None, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_read_token_may_get_but_not_change_403() {
    let api = api(1).await;
    assert_eq!(api.get("/api/v1/messages").await.status(), StatusCode::OK);
    let r = api
        .send(
            reqwest::Method::DELETE,
            "/api/v1/messages/1",
            Some(&api.read),
            None,
        )
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    let r = api
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            Some(&api.read),
            Some(r#"{"extension":"1003","name":"Carol"}"#),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    // The message is still there.
    assert_eq!(api.get("/api/v1/messages/1").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_status_is_set_by_an_admin_and_bad_ones_are_400_or_404() {
    let api = api(0).await;
    let path = "/api/v1/users/1002/status";
    let r = api
        .send(
            reqwest::Method::PUT,
            path,
            Some(&api.admin),
            Some(r#"{"status":"away","away_seconds":3600}"#),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let row: Value = r.json().await.unwrap();
    assert_eq!(row["user_status"], "away", "{row}");
    assert!(row["away_until_ms"].as_i64().is_some(), "{row}");
    let r = api
        .send(
            reqwest::Method::PUT,
            path,
            Some(&api.read),
            Some(r#"{"status":"dnd"}"#),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    for body in [
        r#"{"status":"asleep"}"#,
        r#"{"status":"dnd","away_seconds":60}"#,
        r#"{"status":"dnd","extra":1}"#,
        r#"{"away_seconds":60}"#,
    ] {
        let r = api
            .send(reqwest::Method::PUT, path, Some(&api.admin), Some(body))
            .await;
        let p = problem(r, StatusCode::BAD_REQUEST).await;
        eprintln!("{body}: {}", p["detail"]);
    }
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/users/1009/status",
            Some(&api.admin),
            Some(r#"{"status":"dnd"}"#),
        )
        .await;
    problem(r, StatusCode::NOT_FOUND).await;
    // Nothing a refused request said was kept.
    let presence: Value = api.get("/api/v1/presence").await.json().await.unwrap();
    let bob = presence["stored"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["extension"] == "1002"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(bob["user_status"], "away", "{presence}");
}

#[tokio::test]
async fn bad_json_is_a_400_problem_and_good_json_adds_a_user() {
    let api = api(0).await;
    for body in [
        "{",
        "[]",
        r#"{"extension":1003}"#,
        r#"{"extension":"1003"}"#,
        // A PIN a guesser tries first, or too short.
        r#"{"extension":"1003","name":"Carol","pin":"123456"}"#,
        r#"{"extension":"1003","name":"Carol","pin":"4321"}"#,
    ] {
        let r = api
            .send(
                reqwest::Method::POST,
                "/api/v1/users",
                Some(&api.admin),
                Some(body),
            )
            .await;
        problem(r, StatusCode::BAD_REQUEST).await;
    }
    let r = api
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            Some(&api.admin),
            Some(r#"{"extension":"1003","name":"Carol","pin":"583920"}"#),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["has_pin"], true);
    assert!(user.get("pin").is_none(), "the PIN never leaves: {user}");
    let r = api
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            Some(&api.admin),
            Some(r#"{"extension":"1003","name":"Carol"}"#),
        )
        .await;
    problem(r, StatusCode::CONFLICT).await;
    let r = api
        .send(
            reqwest::Method::GET,
            "/api/v1/messages?limit=0",
            Some(&api.read),
            None,
        )
        .await;
    problem(r, StatusCode::BAD_REQUEST).await;
    let r = api.get("/api/v1/messages?state=lost").await;
    problem(r, StatusCode::BAD_REQUEST).await;
    let r = api.get("/api/v1/messages/abc").await;
    problem(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn unknown_ids_are_404_problems() {
    let api = api(1).await;
    for path in [
        "/api/v1/messages/999",
        "/api/v1/messages/999/audio",
        "/api/v1/users/4040",
        "/api/v1/groups/7000",
        "/api/v1/nothing",
    ] {
        problem(api.get(path).await, StatusCode::NOT_FOUND).await;
    }
    let r = api
        .send(
            reqwest::Method::DELETE,
            "/api/v1/messages/999",
            Some(&api.admin),
            None,
        )
        .await;
    problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn audio_is_the_stored_wav_and_delete_removes_it_from_disk() {
    let api = api(2).await;
    let message: Value = api.get("/api/v1/messages/1").await.json().await.unwrap();
    assert_eq!(message["has_audio"], true);
    let r = api.get("/api/v1/messages/1/audio").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "audio/wav");
    let served = r.bytes().await.unwrap();
    let wav = api.data_dir.join("messages/1001-1002-0000.wav");
    let sln = api.data_dir.join("messages/1001-1002-0000.sln");
    assert_eq!(served.as_ref(), std::fs::read(&wav).unwrap().as_slice());

    let r = api
        .send(
            reqwest::Method::DELETE,
            "/api/v1/messages/1",
            Some(&api.admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!wav.exists() && !sln.exists(), "files removed");
    problem(api.get("/api/v1/messages/1").await, StatusCode::NOT_FOUND).await;
    problem(
        api.get("/api/v1/messages/1/audio").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Its retrieval code finds nothing any more; the other message stays.
    let store = Store::open(&api.data_dir).unwrap();
    let code = MessageCode::parse("0000").unwrap();
    assert!(store.retrievable_by_code("1002", &code).unwrap().is_none());
    let code = MessageCode::parse("0001").unwrap();
    assert!(store.retrievable_by_code("1001", &code).unwrap().is_some());
}

#[tokio::test]
async fn the_list_filters_and_pages_with_a_cursor() {
    let api = api(7).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/messages?limit=3&from=1001".to_owned();
    loop {
        let page: Value = api.get(&path).await.json().await.unwrap();
        for m in page["items"].as_array().unwrap() {
            assert_eq!(m["from"], "1001");
            assert_eq!(m["deliveries"][0]["to"], "1002");
            seen.push(m["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_i64() {
            Some(cursor) => path = format!("/api/v1/messages?limit=3&from=1001&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![7, 5, 3, 1], "newest first, each once");
    let page: Value = api
        .get("/api/v1/messages?to=1001&state=complete")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![6, 4, 2]);
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn concrete(path: &str, method: &str) -> String {
    // Path parameters: an id, an extension and a group that exist (DELETE
    // takes another message than the GETs).
    let id = if method == "delete" { "3" } else { "2" };
    path.replace("{id}", id)
        .replace("{extension}", "1001")
        .replace("{number}", "7001")
}

/// Every operation of the document is served (not the fallback), and every
/// other method on its paths is 405: the router and the document agree.
#[tokio::test]
async fn the_openapi_document_and_the_routes_agree() {
    let api = api(3).await;
    let doc: Value = api.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{:?}", paths.keys());
    for (path, item) in paths {
        for method in METHODS {
            let documented = item.get(method).is_some();
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == "post").then_some(r#"{"extension":"1009","name":"Doc"}"#);
            let r = api
                .send(m, &concrete(path, method), Some(&api.admin), body)
                .await;
            if documented {
                assert!(
                    r.status() != StatusCode::METHOD_NOT_ALLOWED
                        && r.status() != StatusCode::NOT_FOUND,
                    "{method} {path} is documented but answered {}",
                    r.status()
                );
            } else {
                assert_eq!(
                    r.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
}

/// Strings that break naive parsers.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("%00".to_owned()),
        Just("..%2F..%2Fetc%2Fpasswd".to_owned()),
        Just("%FF%FE".to_owned()),
        "[a-z0-9._~-]{0,12}",
        "\\PC{0,8}".prop_map(|s| s
            .chars()
            .map(|c| format!("%{:02X}", c as u32 % 256))
            .collect()),
    ]
}

fn json_body() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{}".to_owned()),
        Just("null".to_owned()),
        Just(r#"{"extension":"","name":""}"#.to_owned()),
        Just(r#"{"extension":"1'; DROP TABLE users;--","name":"x"}"#.to_owned()),
        (
            "[0-9*#]{0,30}",
            "\\PC{0,40}",
            proptest::option::of("[0-9]{0,20}")
        )
            .prop_map(
                |(e, n, p)| serde_json::json!({"extension": e, "name": n, "pin": p}).to_string()
            ),
        "\\PC{0,30}",
    ]
}

/// Every operation of the document with generated path parameters, query
/// values and bodies, by both tokens: never a 5xx.
#[test]
fn generated_inputs_on_every_operation_never_get_a_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = runtime.block_on(api(3));
    // As if a switch were connected: /readyz answers 200, not 503.
    ivm::metrics::global().live().set_connected("test", true);
    let doc: Value =
        runtime.block_on(async { api.get("/openapi.json").await.json().await.unwrap() });
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                let query: Vec<String> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "query")
                            .filter_map(|p| p["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                operations.push((method, path.clone(), query));
            }
        }
    }
    let strategy = (
        0..operations.len(),
        hostile(),
        proptest::collection::vec(proptest::option::of(hostile()), 5),
        json_body(),
        any::<bool>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 400,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(op, param, values, body, admin)| {
            let (method, path, query) = &operations[op];
            let mut target = path
                .replace("{id}", &param)
                .replace("{extension}", &param)
                .replace("{number}", &param);
            if target.contains("//") || target.ends_with('/') && target.len() > 1 {
                // An empty path parameter names another route; skip it.
                target = path
                    .replace("{id}", "1")
                    .replace("{extension}", "1001")
                    .replace("{number}", "1");
            }
            let pairs: Vec<String> = query
                .iter()
                .zip(&values)
                .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
                .collect();
            if !pairs.is_empty() {
                target = format!("{target}?{}", pairs.join("&"));
            }
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let token = if admin { &api.admin } else { &api.read };
            let body = (*method == "post").then_some(body.as_str());
            let status = runtime
                .block_on(api.send(m, &target, Some(token), body))
                .status();
            prop_assert!(
                !status.is_server_error(),
                "{method} {target} body {body:?}: {status}"
            );
            Ok(())
        })
        .unwrap();
}
