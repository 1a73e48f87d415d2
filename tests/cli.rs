//! The admin CLI as an administrator uses it: the real binary, a fresh data
//! directory, exit codes and output checked.

#[path = "common/launch.rs"]
mod launch;

use std::path::Path;
use std::process::Output;

use launch::{ivm_command, run};
use serde_json::{Value, json};

fn ivm(data_dir: &Path, args: &[&str]) -> Output {
    run(ivm_command().arg("--data-dir").arg(data_dir).args(args))
}

/// `ivm` with `input` on its stdin.
fn ivm_stdin(data_dir: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = ivm_command()
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the ivm binary");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ivm panicked: {stderr}");
    out
}

fn ok_json(data_dir: &Path, args: &[&str]) -> Value {
    let out = ivm(data_dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

fn fails(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

#[test]
fn explain_examples_in_the_exact_json_shape() {
    let (_t, d) = data_dir();
    let ext = |v: &str| json!({"kind": "extension", "value": v});
    let cases = [
        (
            "*771002",
            json!({"kind": "message", "form": "prefix", "targets": [ext("1002")], "message_code": null}),
        ),
        (
            "1002*77",
            json!({"kind": "message", "form": "suffix", "targets": [ext("1002")], "message_code": null}),
        ),
        (
            "*77*192*168*1*20",
            json!({"kind": "message", "form": "prefix", "targets": [{"kind": "ip", "value": "192.168.1.20"}], "message_code": null}),
        ),
        (
            "*78*1002*1003",
            json!({"kind": "group_message", "form": "prefix", "targets": [ext("1002"), ext("1003")], "message_code": null}),
        ),
        (
            "*77",
            json!({"kind": "reply", "form": "prefix", "targets": [], "message_code": null}),
        ),
        (
            "*55123456",
            json!({"kind": "retrieve", "form": "prefix", "targets": [], "message_code": "123456"}),
        ),
        (
            "*55",
            json!({"kind": "retrieve_next", "form": "prefix", "targets": [], "message_code": null}),
        ),
    ];
    for (digits, expected) in cases {
        assert_eq!(
            ok_json(&d, &["dialplan", "explain", digits, "--json"]),
            expected,
            "{digits}"
        );
    }
    // Explaining must not create the data directory.
    assert!(!d.exists());
}

#[test]
fn explain_stored_group_and_reply_target() {
    let (_t, d) = data_dir();
    let out = ivm(&d, &["dialplan", "explain", "*78600", "--json"]);
    assert!(fails(&out, 1).contains("no stored group 600"));
    for (ext, name) in [("1001", "Alice"), ("1002", "Bob")] {
        assert!(
            ivm(&d, &["user", "add", ext, "--name", name])
                .status
                .success()
        );
    }
    assert!(
        ivm(
            &d,
            &[
                "group",
                "add",
                "600",
                "--members",
                "1001,1002",
                "--name",
                "Sales"
            ]
        )
        .status
        .success()
    );
    assert_eq!(
        ok_json(&d, &["dialplan", "explain", "*78600", "--json"]),
        json!({"kind": "group_message", "form": "prefix", "targets": [{"kind": "group", "value": "600"}], "message_code": null})
    );
    let groups = ok_json(&d, &["group", "list", "--json"]);
    assert_eq!(
        groups,
        json!([{"number": "600", "name": "Sales", "members": ["1001", "1002"]}])
    );
}

#[test]
fn explain_refuses_garbage_with_one_line() {
    let (_t, d) = data_dir();
    for bad in [
        "garbage",
        "",
        "*7",
        "1002",
        "*77*1*2*3",
        "*77*999*1*1*1",
        "*55123",
        "*78",
        "**",
        "#",
        "*77é",
    ] {
        let out = ivm(&d, &["dialplan", "explain", bad, "--json"]);
        let stderr = fails(&out, 1);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{bad:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
}

#[test]
fn users_add_list_and_refuse_bad_input() {
    let (_t, d) = data_dir();
    let add = [
        "user",
        "add",
        "1001",
        "--name",
        "Alice",
        "--mobile",
        "+15551230001",
        "--pin-stdin",
    ];
    // Never from argv: --pin says where to give it instead.
    let mut on_argv = add.to_vec();
    on_argv.pop();
    on_argv.extend(["--pin", "802468"]);
    let stderr = fails(&ivm(&d, &on_argv), 1);
    assert!(stderr.contains("--pin-stdin"), "{stderr}");
    let out = ivm_stdin(&d, &add, "802468\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users = ok_json(&d, &["user", "list", "--json"]);
    assert_eq!(
        users,
        json!([{"extension": "1001", "name": "Alice", "mobile": "+15551230001", "has_pin": true}])
    );
    let listed = String::from_utf8(ivm(&d, &["user", "list", "--json"]).stdout).unwrap();
    assert!(
        !listed.contains("802468") && !listed.contains("argon"),
        "{listed}"
    );

    assert!(fails(&ivm_stdin(&d, &add, "802468\n"), 1).contains("already exists"));
    let stderr = fails(
        &ivm(
            &d,
            &[
                "user", "add", "1002", "--name", "Bob", "--mobile", "555-1234",
            ],
        ),
        1,
    );
    assert!(stderr.contains("mobile"), "{stderr}");
    for (pin, why) in [
        ("12345\n", "6 to 12 digits"),
        ("\n", "no PIN"),
        ("111111\n", "too easy"),
        ("345678\n", "too easy"),
        ("876543\n", "too easy"),
        ("551002\n", "extension"),
    ] {
        let stderr = fails(
            &ivm_stdin(
                &d,
                &["user", "add", "1002", "--name", "Bob", "--pin-stdin"],
                pin,
            ),
            1,
        );
        assert!(stderr.contains(why), "{pin:?}: {stderr}");
    }
    let stderr = fails(&ivm(&d, &["user", "add", "10x2", "--name", "Bob"]), 1);
    assert!(stderr.contains("extension"), "{stderr}");
    // Nothing already stored was lost along the way.
    assert_eq!(
        ok_json(&d, &["user", "list", "--json"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // passwd: from stdin, refused when trivial, asked on a terminal only.
    let passwd = ["user", "passwd", "1001", "--pin-stdin"];
    assert!(fails(&ivm_stdin(&d, &passwd, "123456\n"), 1).contains("too easy"));
    assert!(ivm_stdin(&d, &passwd, "975310\n").status.success());
    let stderr = fails(&ivm(&d, &["user", "passwd", "1001"]), 1);
    assert!(stderr.contains("--pin-stdin"), "{stderr}");
    assert!(
        ivm(&d, &["user", "passwd", "1001", "--clear"])
            .status
            .success()
    );
    assert_eq!(
        ok_json(&d, &["user", "list", "--json"])[0]["has_pin"],
        json!(false)
    );
    assert!(fails(&ivm(&d, &["user", "passwd", "1009", "--clear"]), 1).contains("no user"));

    assert!(ivm(&d, &["user", "remove", "1001"]).status.success());
    assert!(fails(&ivm(&d, &["user", "remove", "1001"]), 1).contains("no user"));
}

#[test]
fn usage_errors_exit_2() {
    let (_t, d) = data_dir();
    fails(&ivm(&d, &["user", "add", "1001"]), 2);
    fails(&ivm(&d, &["frobnicate"]), 2);
    fails(&ivm(&d, &["group", "add", "600"]), 2);
}

#[test]
fn groups_need_existing_members() {
    let (_t, d) = data_dir();
    assert!(
        ivm(&d, &["user", "add", "1001", "--name", "Alice"])
            .status
            .success()
    );
    let stderr = fails(
        &ivm(&d, &["group", "add", "600", "--members", "1001,1009"]),
        1,
    );
    assert!(stderr.contains("1009"), "{stderr}");
    assert_eq!(ok_json(&d, &["group", "list", "--json"]), json!([]));
}

#[test]
fn groups_are_shown_edited_and_removed_and_bad_lists_store_nothing() {
    let (_t, d) = data_dir();
    for (ext, name) in [("1001", "Alice"), ("1002", "Bob"), ("1003", "Carol")] {
        assert!(
            ivm(&d, &["user", "add", ext, "--name", name])
                .status
                .success()
        );
    }
    let stderr = fails(
        &ivm(&d, &["group", "add", "600", "--members", "1001,1002,1001"]),
        1,
    );
    assert!(stderr.contains("listed more than once: 1001"), "{stderr}");
    let stderr = fails(&ivm(&d, &["group", "add", "1003", "--members", "1001"]), 1);
    assert!(stderr.contains("user's extension"), "{stderr}");
    assert_eq!(ok_json(&d, &["group", "list", "--json"]), json!([]));

    assert!(
        ivm(
            &d,
            &[
                "group",
                "add",
                "600",
                "--members",
                "1001, 1002",
                "--name",
                "Desk"
            ]
        )
        .status
        .success()
    );
    let edited = ivm(
        &d,
        &["group", "edit", "600", "--add", "1003", "--remove", "1001"],
    );
    assert!(edited.status.success(), "{edited:?}");
    assert_eq!(
        ok_json(&d, &["group", "show", "600", "--json"]),
        json!({"number": "600", "name": "Desk", "members": ["1002", "1003"]})
    );
    let stderr = fails(&ivm(&d, &["group", "edit", "600", "--remove", "1001"]), 1);
    assert!(stderr.contains("not in group 600: 1001"), "{stderr}");
    let stderr = fails(&ivm(&d, &["group", "edit", "600"]), 1);
    assert!(stderr.contains("nothing to change"), "{stderr}");
    let stderr = fails(&ivm(&d, &["group", "show", "700"]), 1);
    assert!(stderr.contains("no group 700"), "{stderr}");

    assert!(ivm(&d, &["group", "remove", "600"]).status.success());
    assert_eq!(ok_json(&d, &["group", "list", "--json"]), json!([]));
    let stderr = fails(&ivm(&d, &["group", "remove", "600"]), 1);
    assert!(stderr.contains("no group 600"), "{stderr}");
    assert_eq!(
        ok_json(&d, &["user", "list", "--json"])
            .as_array()
            .map(Vec::len),
        Some(3),
        "members stay users"
    );
}

#[test]
fn message_list_starts_empty() {
    let (_t, d) = data_dir();
    assert_eq!(ok_json(&d, &["message", "list", "--json"]), json!([]));
    assert_eq!(
        ok_json(&d, &["message", "list", "--to", "1002", "--json"]),
        json!([])
    );
}

#[test]
fn config_check_names_the_key() {
    let (t, d) = data_dir();
    let cases = [
        ("colour = \"blue\"\n", "`colour`"),
        (
            "[delivery]\nring_timeout_secs = 3\n",
            "delivery.ring_timeout_secs",
        ),
        (
            "[limits]\nmax_message_seconds = \"long\"\n",
            "limits.max_message_seconds",
        ),
        (
            "[limits]\nmax_message_seconds = 0\n",
            "limits.max_message_seconds",
        ),
        (
            "[asterisk]\nami_address = \"nowhere\"\n",
            "asterisk.ami_address",
        ),
        (
            "[numbering]\nmessage_code = \"77\"\n",
            "numbering.message_code",
        ),
    ];
    for (text, key) in cases {
        let file = t.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = ivm(&d, &["config", "check", file.to_str().unwrap()]);
        let stderr = fails(&out, 1);
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    let file = t.path().join("good.toml");
    std::fs::write(
        &file,
        "[asterisk]\nami_secret = \"hunter2\"\n[delivery]\nring_timeout_seconds = 20\n",
    )
    .unwrap();
    assert!(
        ivm(&d, &["config", "check", file.to_str().unwrap()])
            .status
            .success()
    );
    let out = ivm(&d, &["--config", file.to_str().unwrap(), "config", "show"]);
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("ring_timeout_seconds = 20"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let stderr = fails(&ivm(&d, &["config", "check", "/nonexistent/ivm.toml"]), 1);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn config_is_found_through_the_environment() {
    let (t, d) = data_dir();
    let file = t.path().join("env.toml");
    std::fs::write(&file, "[delivery]\nring_timeout_seconds = 17\n").unwrap();
    let out = run(ivm_command()
        .args(["--data-dir", d.to_str().unwrap(), "config", "show"])
        .env("IVM_CONFIG", &file));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ring_timeout_seconds = 17"));
}

#[test]
fn every_toml_example_in_the_readme_is_a_valid_config() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(blocks.len() >= 3, "the README shows its configuration");
    for block in blocks {
        // Indented blocks sit inside list items.
        let text: String = block
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        if let Err(e) = ivm::config::Config::from_toml(&text, std::path::Path::new("README.md")) {
            panic!("README example does not check: {e}\n{text}");
        }
    }
}
