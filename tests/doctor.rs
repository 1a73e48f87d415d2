//! `ivm doctor` as an administrator runs it: against nothing, against a real
//! Asterisk with the shipped dialplan snippet, and with a wrong AMI secret.

#[path = "common/launch.rs"]
mod launch;

use std::process::Output;

use launch::{ivm_command, run};

use ivm_testbed::{Asterisk, AsteriskOptions, free_tcp_port};

fn doctor(config: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ivm.toml");
    std::fs::write(&file, config).unwrap();
    let out = run(ivm_command()
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("doctor"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out, text)
}

#[test]
fn without_asterisk_it_fails_and_names_the_address() {
    let port = free_tcp_port().unwrap();
    let (out, text) = doctor(&format!(
        "[asterisk]\nami_address = \"127.0.0.1:{port}\"\nagi_listen = \"127.0.0.1:{}\"\n",
        free_tcp_port().unwrap()
    ));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port} is unreachable")),
        "{text}"
    );
}

#[test]
fn against_the_real_asterisk_every_check_passes_and_a_wrong_secret_is_named() {
    let agi_port = free_tcp_port().unwrap();
    let asterisk = Asterisk::start(AsteriskOptions { agi_port }).expect("start asterisk");
    let section = |secret: &str| {
        format!(
            "[asterisk]\nami_address = \"{}\"\nagi_listen = \"127.0.0.1:{agi_port}\"\nami_secret = \"{secret}\"\nagi_secret = \"{}\"\n",
            asterisk.ami_address(),
            ivm_testbed::AGI_SECRET
        )
    };
    let (out, text) = doctor(&section(ivm_testbed::AMI_SECRET));
    assert!(out.status.success(), "{text}");
    for expected in [
        "writable",
        "accepts user `ivm`",
        "[ivm] (the star codes) is loaded",
        "[ivm-originate]",
        "FastAGI address",
        "live media on asterisk: stream (asterisk 22.",
        "with app_audiosocket); AudioSocket on 127.0.0.1:0, loopback only",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let (out, text) = doctor(&format!(
        "[delivery]\nmedia = \"files\"\n{}",
        section(ivm_testbed::AMI_SECRET)
    ));
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("live media on asterisk: files ([delivery] media = \"files\""),
        "{text}"
    );

    let (out, text) = doctor(&section("wrong"));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("login as `ivm` refused"), "{text}");
}
