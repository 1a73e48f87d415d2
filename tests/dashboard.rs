//! A real call through the real Asterisk with baresip phones, then the HTTP
//! side of it: `/metrics` shows the beep and first-audio histograms moved,
//! and the dashboard in headless Chromium (Playwright for Python driving
//! the system `chromium`) lists the message, plays it, and deletes it.
//! The browser part is skipped with a message where Chromium or Playwright
//! is missing, unless `CI` is set (then it fails).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use ivm_testbed::{Phone, free_tcp_port, write_wav};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// `name_count` of a histogram in a metrics text, 0 when absent.
fn histogram_count(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

struct Http {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Http {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }
    async fn metrics(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

fn browser_tools() -> Result<PathBuf, String> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no /usr/bin/chromium (apt-get install chromium)")?;
    let playwright = std::process::Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !playwright.status.success() {
        return Err("Playwright for Python missing (pip install playwright)".into());
    }
    Ok(chromium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_call_moves_the_metrics_and_the_dashboard_plays_and_deletes_it() {
    let (asterisk, agi_port) = asterisk();
    let port = free_tcp_port().unwrap();
    let ivm = tokio::task::block_in_place(|| {
        Ivm::start(
            &asterisk,
            agi_port,
            &format!("[api]\nlisten = \"127.0.0.1:{port}\""),
        )
    });
    let out = ivm.cli(&["token", "create", "--scope", "admin", "--name", "test"]);
    assert!(out.status.success(), "{out:?}");
    let http = Http {
        base: format!("http://127.0.0.1:{port}"),
        token: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        client: reqwest::Client::new(),
    };
    // Ready once the switch is connected (the store answers too).
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = http.get("/readyz").await;
        if ready.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {:?}",
            ready.text().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = http.metrics().await;
    assert!(
        before.contains("ivm_switch_connected{switch=\"asterisk\"} 1"),
        "{before}"
    );

    // Alice says 3 s and hangs up when her file ends; Bob answers on the 2nd s.
    let dir = tempfile::tempdir().unwrap();
    let speech = dir.path().join("alice.wav");
    write_wav(&speech, &[silence(300), tone(600.0, 3_000)].concat()).unwrap();
    let mut alice = Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    let mut bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_INCOMING", WAIT).await.unwrap();
    bob.answer().await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();

    // The message is finished and its WAV written.
    let deadline = Instant::now() + WAIT;
    let message = loop {
        let page: Value = http.get("/api/v1/messages").await.json().await.unwrap();
        if let Some(m) = page["items"].get(0)
            && m["state"] == "complete"
            && m["has_audio"] == true
        {
            break m.clone();
        }
        assert!(Instant::now() < deadline, "no finished message: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = message["id"].as_i64().unwrap();
    let after = http.metrics().await;
    for name in ["ivm_beep_seconds", "ivm_first_audio_seconds"] {
        assert!(
            histogram_count(&after, name) > histogram_count(&before, name),
            "{name} did not move:\n{after}"
        );
    }
    let _ = bob.hangup().await;
    let _ = alice.hangup().await;

    let chromium = match browser_tools() {
        Ok(path) => path,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED the dashboard part: {why}");
            return;
        }
        Err(why) => panic!("CI is set but the browser test cannot run: {why}"),
    };
    let wav = ivm.data_dir().join(
        std::fs::read_dir(ivm.data_dir().join("messages"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "wav"))
            .expect("the message's WAV on disk"),
    );
    let screenshot = std::path::absolute("target/dashboard-test.png").unwrap();
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/drive.py");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("python3")
            .arg(&driver)
            .args([
                "--url",
                &http.base,
                "--token",
                &http.token,
                "--message",
                &id.to_string(),
                "--chromium",
                chromium.to_str().unwrap(),
                "--screenshot",
                screenshot.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "driver failed:\n{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    println!("dashboard screenshot: {}", screenshot.display());
    assert_eq!(report["console_errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["listed"], true, "{report}");
    assert!(report["ready_state"].as_i64().unwrap() >= 2, "{report}");
    assert!(report["buffered"].as_i64().unwrap() > 0, "{report}");
    assert_eq!(report["gone_from_list"], true, "{report}");
    assert!(screenshot.exists());
    // Gone from the API and from the disk.
    assert_eq!(
        http.get(&format!("/api/v1/messages/{id}")).await.status(),
        404
    );
    assert!(!wav.exists(), "{} still on disk", wav.display());
}
