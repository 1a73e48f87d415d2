//! Benchmark of the HTTP API and the dashboard; prints figures, asserts
//! nothing. `cargo run --release --example api_bench [-- MESSAGES REQUESTS]`
//!
//! * the message list (`GET /api/v1/messages?limit=50`, and filtered by
//!   target) over a store of 10 000 messages: p50 / p95 / max, one client,
//!   requests one after another, on this machine's loopback;
//! * the dashboard's first contentful paint in headless Chromium (from the
//!   browser's performance timing), when `/usr/bin/chromium` and Playwright
//!   for Python are installed.

use std::time::{Duration, Instant};

use ivm::api::{ApiConfig, ApiState};
use ivm::store::api::Scope;
use ivm::store::{Store, StoreHandle};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn fill(data_dir: &std::path::Path, messages: usize) -> rusqlite::Result<()> {
    let mut conn = rusqlite::Connection::open(data_dir.join(ivm::store::DB_FILE))?;
    let tx = conn.transaction()?;
    let now = ivm::store::now_ms();
    for i in 0..messages {
        let from = format!("{}", 1001 + i % 50);
        let to = format!("{}", 1001 + (i + 7) % 50);
        tx.execute(
            "INSERT INTO messages (sender, state, audio_format, sample_rate, audio_path, wav_path,
                                   started_at, ended_at, duration_ms)
             VALUES (?1, 'complete', 'sln', 8000, ?2, ?3, ?4, ?4, 5000)",
            rusqlite::params![
                from,
                format!("messages/{i}.sln"),
                format!("messages/{i}.wav"),
                now - (messages - i) as i64 * 1000
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO deliveries (message_id, target_kind, target, code, state, updated_at)
             VALUES (?1, 'extension', ?2, ?3, 'heard', ?4)",
            rusqlite::params![id, to, format!("{i:06}"), now],
        )?;
    }
    tx.commit()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(10_000);
    let requests = args.get(1).copied().unwrap_or(500);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = Store::open(dir.path()).expect("the store");
    let (_, token) = store.create_token("bench", Scope::Read).expect("a token");
    drop(store);
    fill(dir.path(), messages).expect("filling the store");
    let store = StoreHandle::spawn(Store::open(dir.path()).expect("the store")).expect("thread");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let (address, _task) = ivm::api::start(
        &ApiConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
        },
        ApiState {
            store,
            data_dir: dir.path().to_owned(),
            status_changed: None,
        },
        stopped,
    )
    .await
    .expect("the api");
    let client = reqwest::Client::new();
    let base = format!("http://{address}");
    println!("store: {messages} messages; {requests} requests per query, one at a time");
    for query in [
        "/api/v1/messages?limit=50",
        "/api/v1/messages?limit=50&to=1010",
        "/api/v1/messages?limit=50&cursor=5000",
    ] {
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            let start = Instant::now();
            let response = client
                .get(format!("{base}{query}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("a response");
            let body = response.bytes().await.expect("a body");
            times.push(start.elapsed());
            assert!(!body.is_empty());
        }
        times.sort();
        println!(
            "GET {query:<40} p50 {:>6.2} ms  p95 {:>6.2} ms  max {:>6.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }

    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/drive.py");
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        println!("dashboard first paint: skipped (no /usr/bin/chromium)");
        return;
    }
    let mut paints = Vec::new();
    for _ in 0..5 {
        let out = std::process::Command::new("python3")
            .args([
                driver,
                "--url",
                &base,
                "--token",
                &token,
                "--first-paint-only",
            ])
            .output();
        let Ok(out) = out else {
            println!("dashboard first paint: skipped (no python3)");
            return;
        };
        let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => {
                println!(
                    "dashboard first paint: skipped ({})",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                return;
            }
        };
        if let Some(ms) = report["first_paint_ms"].as_f64() {
            paints.push(ms);
        }
    }
    paints.sort_by(f64::total_cmp);
    println!(
        "dashboard first contentful paint (headless Chromium, {} loads): median {:.0} ms, max {:.0} ms",
        paints.len(),
        paints.get(paints.len() / 2).copied().unwrap_or(f64::NAN),
        paints.last().copied().unwrap_or(f64::NAN)
    );
}
