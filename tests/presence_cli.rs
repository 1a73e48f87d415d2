//! `ivm presence set|show`, `ivm user rules`, `ivm user notify` through
//! the real binary: what they store, what they print, what they refuse.

use std::path::Path;
use std::process::{Command, Output};

fn ivm(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivm"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("IVM_CONFIG")
        .current_dir(data)
        .output()
        .expect("ivm runs")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = ivm(data, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(data: &Path, args: &[&str]) -> String {
    let out = ivm(data, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    String::from_utf8(out.stderr).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap()
}

#[test]
fn presence_set_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["user", "add", "1002", "--name", "Bob"]);
    let shown = json(&ok(d, &["presence", "show", "--json"]));
    assert_eq!(shown[0]["extension"], "1002");
    assert_eq!(shown[0]["status"], "available");
    assert_eq!(shown[0]["registered"], serde_json::Value::Null);

    assert!(ok(d, &["presence", "set", "1002", "dnd"]).contains("dnd"));
    assert_eq!(
        json(&ok(d, &["presence", "show", "--json"]))[0]["status"],
        "dnd"
    );

    let said = ok(d, &["presence", "set", "1002", "away", "--until", "90m"]);
    assert!(said.contains("away (1h 30m more)"), "{said}");
    let shown = json(&ok(d, &["presence", "show", "--json"]));
    assert_eq!(shown[0]["status"], "away");
    let (until, at) = (
        shown[0]["away_until_ms"].as_i64().unwrap(),
        shown[0]["updated_at_ms"].as_i64().unwrap(),
    );
    assert_eq!(until - at, 90 * 60_000);

    ok(d, &["presence", "set", "1002", "available"]);
    assert_eq!(
        json(&ok(d, &["presence", "show", "--json"]))[0]["status"],
        "available"
    );

    assert!(refused(d, &["presence", "set", "1003", "dnd"]).contains("no user"));
    assert!(refused(d, &["presence", "set", "1002", "dnd", "--until", "1h"]).contains("--until"));
    for bad in ["5x", "0m", "1h30", "h", "9999999d", "400d"] {
        refused(d, &["presence", "set", "1002", "away", "--until", bad]);
    }
    assert_eq!(
        json(&ok(d, &["presence", "show", "--json"]))[0]["status"],
        "available",
        "refused settings change nothing"
    );
}

#[test]
fn user_rules_and_notify_channels_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["user", "add", "1002", "--name", "Bob"]);
    let rules = json(&ok(d, &["user", "rules", "1002", "--json"]));
    assert_eq!(
        (&rules["offline"], &rules["dnd"], &rules["busy"]),
        (&"store".into(), &"store".into(), &"ring".into())
    );
    ok(
        d,
        &[
            "user",
            "rules",
            "1002",
            "--offline",
            "ring",
            "--busy",
            "wait",
            "--ring-timeout",
            "20",
        ],
    );
    let rules = json(&ok(d, &["user", "rules", "1002", "--json"]));
    assert_eq!(rules["offline"], "ring");
    assert_eq!(rules["busy"], "wait");
    assert_eq!(rules["ring_timeout_seconds"], 20);
    assert!(refused(d, &["user", "rules", "1002", "--ring-timeout", "2"]).contains("ring-timeout"));
    assert_eq!(
        json(&ok(d, &["user", "rules", "1002", "--json"]))["ring_timeout_seconds"],
        20
    );
    refused(d, &["user", "rules", "1003", "--busy", "store"]);

    // Push when available: a limit of calls and quiet hours per user.
    let rules = json(&ok(d, &["user", "rules", "1002", "--json"]));
    assert_eq!(rules["push_limit"], 3, "the default");
    assert_eq!(rules["quiet_hours"], serde_json::Value::Null);
    let said = ok(
        d,
        &[
            "user",
            "rules",
            "1002",
            "--push-limit",
            "1",
            "--quiet-hours",
            "22:00-07:00",
        ],
    );
    assert!(
        said.contains("push at most 1 call per message, quiet hours 22:00-07:00 (local time)"),
        "{said}"
    );
    let rules = json(&ok(d, &["user", "rules", "1002", "--json"]));
    assert_eq!(rules["push_limit"], 1);
    assert_eq!(rules["quiet_hours"], "22:00-07:00");
    assert_eq!(rules["busy"], "wait", "other rules kept");
    assert!(refused(d, &["user", "rules", "1002", "--push-limit", "21"]).contains("push-limit"));
    for bad in ["22:00", "25:00-07:00", "07:00-07:00"] {
        let out = ivm(d, &["user", "rules", "1002", "--quiet-hours", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("HH:MM-HH:MM"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let said = ok(
        d,
        &[
            "user",
            "rules",
            "1002",
            "--push-limit",
            "0",
            "--no-quiet-hours",
        ],
    );
    assert!(said.contains("push never, quiet hours none"), "{said}");
    let rules = json(&ok(d, &["user", "rules", "1002", "--json"]));
    assert_eq!(rules["push_limit"], 0);
    assert_eq!(rules["quiet_hours"], serde_json::Value::Null);

    let n = json(&ok(d, &["user", "notify", "1002", "--json"]));
    assert_eq!(n["default"], true);
    ok(d, &["user", "notify", "1002", "--mwi", "--sip-message"]);
    let n = json(&ok(d, &["user", "notify", "1002", "--json"]));
    assert_eq!(n["channels"], serde_json::json!(["sip_message", "mwi"]));
    assert_eq!(n["default"], false);
    assert!(refused(d, &["user", "notify", "1002", "--sms"]).contains("no SMS gateway"));
    ok(d, &["user", "notify", "1002", "--none"]);
    assert_eq!(
        json(&ok(d, &["user", "notify", "1002", "--json"]))["channels"],
        serde_json::json!([])
    );
    ok(d, &["user", "notify", "1002", "--default"]);
    assert_eq!(
        json(&ok(d, &["user", "notify", "1002", "--json"]))["default"],
        true
    );
}
