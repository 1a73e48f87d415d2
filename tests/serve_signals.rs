//! `ivm serve`'s lifecycle as a service manager sees it: the real binary,
//! SIGTERM or SIGINT → it stops and exits 0. (What happens to calls in
//! progress on a stop is in `serve_security.rs`, on the fake switch.)

#[path = "common/launch.rs"]
mod launch;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `ivm serve` on an Asterisk config whose AMI nobody answers (it serves
/// anyway, reconnecting in the background); returns once it says so.
fn serve(dir: &std::path::Path) -> Child {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ami = closed.local_addr().unwrap();
    drop(closed);
    let config = dir.join("ivm.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[asterisk]\nagi_listen = \"127.0.0.1:0\"\nami_address = \"{ami}\"\n\
             ami_secret = \"a-test-ami-secret\"\nagi_secret = \"a-test-agi-secret-0123456789\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut child = launch::ivm_command()
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("IVM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ivm: serving"), "{line:?}");
    child
}

/// Wait for `child` to exit, up to `within`.
fn exit_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ivm serve did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_serve_with_exit_0() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = serve(dir.path());
        // SAFETY: a signal to our own child, by its pid.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let status = exit_within(&mut child, Duration::from_secs(10));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "signal {signal}: {status:?}\n{stderr}");
        assert!(stderr.contains("ivm: stopping"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
