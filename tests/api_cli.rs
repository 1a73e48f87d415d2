//! The API's commands on the real binary: `ivm token create|list|revoke`
//! (printed once, stored hashed, revoked tokens refused) and
//! `ivm message delete` (the same store code as the API's DELETE).

#[path = "common/launch.rs"]
mod launch;

use std::path::Path;
use std::process::Output;

use ivm::store::{NewMessage, Store};

fn ivm(data_dir: &Path, args: &[&str]) -> Output {
    launch::run(
        launch::ivm_command()
            .arg("--data-dir")
            .arg(data_dir)
            .args(args),
    )
}

#[test]
fn tokens_are_printed_once_stored_hashed_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let out = ivm(
        dir.path(),
        &["token", "create", "--scope", "read", "--name", "grafana"],
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("ivm_") && token.len() == 68, "{token}");
    // Only its hash is in the database file.
    let db = std::fs::read(dir.path().join(ivm::store::DB_FILE)).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token itself is stored"
    );
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.check_token(&token).unwrap(),
        Some(ivm::store::api::Scope::Read)
    );

    let out = ivm(dir.path(), &["token", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "grafana");
    assert_eq!(list[0]["scope"], "read");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&token));

    let id = list[0]["id"].as_i64().unwrap().to_string();
    assert!(ivm(dir.path(), &["token", "revoke", &id]).status.success());
    assert_eq!(store.check_token(&token).unwrap(), None);
    let again = ivm(dir.path(), &["token", "revoke", &id]);
    assert_eq!(again.status.code(), Some(1));
    let bad = ivm(dir.path(), &["token", "create", "--scope", "root"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
}

#[test]
fn message_delete_removes_rows_code_and_files() {
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("data");
    let messages = data.join("messages");
    std::fs::create_dir_all(&messages).unwrap();
    for file in ["m.sln", "m.listen.sln", "m.wav"] {
        std::fs::write(messages.join(file), b"RIFF").unwrap();
    }
    let outside = top.path().join("keep.wav");
    std::fs::write(&outside, b"keep").unwrap();
    let mut store = Store::open(&data).unwrap();
    let id = store
        .create_message(&NewMessage {
            sender: "1001",
            group_number: None,
            audio_format: "sln",
            sample_rate: 8000,
            audio_path: "messages/m.sln",
            targets: vec![("extension", "1002", "4711")],
        })
        .unwrap();
    // A row pointing outside the data directory must not delete that file.
    store.set_wav_path(id, "../keep.wav").unwrap();
    let out = ivm(&data, &["message", "delete", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "still recording: refused");
    store
        .set_message_state(id, ivm::domain::MessageState::Complete, Some(10))
        .unwrap();
    let out = ivm(&data, &["message", "delete", &id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    for file in ["m.sln", "m.listen.sln", "m.wav"] {
        assert!(!messages.join(file).exists(), "{file} left");
    }
    assert!(outside.exists());
    let code = ivm::domain::MessageCode::parse("4711").unwrap();
    assert!(store.retrievable_by_code("1002", &code).unwrap().is_none());
    let out = ivm(&data, &["message", "delete", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "no such message");
}
