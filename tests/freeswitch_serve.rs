//! `ivm serve` and `ivm doctor` with a `[freeswitch]` section, against a
//! peer that answers with the bytes a real FreeSWITCH 1.11.1 sent
//! (tests/data/esl/inbound-auth-*.from-fs.bin), and `ivm doctor` against
//! the testbed's real FreeSWITCH.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const AUTH_OK: &[u8] = include_bytes!("data/esl/inbound-auth-ok.from-fs.bin");
const AUTH_BAD: &[u8] = include_bytes!("data/esl/inbound-auth-bad.from-fs.bin");

/// The first `n` frames (header block, plus body if Content-Length) of a capture.
fn frames(capture: &[u8], n: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(capture);
    let mut out = String::new();
    let mut rest: &str = &text;
    for _ in 0..n {
        let Some(end) = rest.find("\n\n") else { break };
        let head = &rest[..end + 2];
        let body_len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        out.push_str(&rest[..end + 2 + body_len]);
        rest = &rest[end + 2 + body_len..];
    }
    out.into_bytes()
}

/// Read one command (up to the blank line) from a client.
fn read_command(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut command = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\n" {
            return Some(command);
        }
        command.push_str(&line);
    }
}

/// A FreeSWITCH event socket on loopback: real auth frames, then `+OK` to
/// every command. Each command received is reported.
fn fake_event_socket(password: &'static str) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, commands) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                stream.write_all(&frames(AUTH_OK, 1)).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let Some(auth) = read_command(&mut reader) else {
                    return;
                };
                let _ = seen.send(auth.clone());
                if auth.trim() != format!("auth {password}") {
                    // -ERR invalid, the disconnect notice, then close.
                    let bad = frames(AUTH_BAD, 3);
                    let _ = stream.write_all(&bad[frames(AUTH_BAD, 1).len()..]);
                    return;
                }
                let ok = frames(AUTH_OK, 2);
                stream.write_all(&ok[frames(AUTH_OK, 1).len()..]).unwrap();
                while let Some(command) = read_command(&mut reader) {
                    let _ = seen.send(command.clone());
                    let reply = if command.starts_with("api ") || command.starts_with("bgapi ") {
                        let body = if command.contains("global_getvar domain") {
                            "127.0.0.1".to_owned()
                        } else if command.contains("global_getvar default_password") {
                            "changed".to_owned()
                        } else if command.contains("xml_locate dialplan") {
                            format!(
                                "<document><section name=\"dialplan\"><context name=\"default\">{}</context></section></document>",
                                include_str!("../dialplan/freeswitch/ivm.xml")
                            )
                        } else {
                            "+OK\n".to_owned()
                        };
                        format!(
                            "Content-Type: api/response\nContent-Length: {}\n\n{body}",
                            body.len()
                        )
                    } else {
                        "Content-Type: command/reply\nReply-Text: +OK\n\n".to_string()
                    };
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, commands)
}

fn config(
    dir: &tempfile::TempDir,
    esl_port: u16,
    password: &str,
    outbound: u16,
) -> std::path::PathBuf {
    let file = dir.path().join("ivm.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\n[freeswitch]\nesl_address = \"127.0.0.1:{esl_port}\"\nesl_password = \"{password}\"\noutbound_listen = \"127.0.0.1:{outbound}\"\noutbound_secret = \"fs-outbound-secret-0123\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    file
}

fn free_port() -> u16 {
    ivm_testbed::free_tcp_port().unwrap()
}

#[test]
fn doctor_logs_in_to_the_event_socket_and_names_a_wrong_password() {
    let (port, _commands) = fake_event_socket("not-the-default-1");
    let dir = tempfile::tempdir().unwrap();
    let run = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_ivm"))
            .arg("--config")
            // The shipped ivm.xml's socket address.
            .arg(config(&dir, port, password, 8084))
            .arg("doctor")
            .output()
            .unwrap()
    };
    let out = run("not-the-default-1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("accepts the password"), "{text}");
    assert!(text.contains("hands IVM codes to ivm"), "{text}");

    let out = run("wrong");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("password refused"), "{text}");
}

#[test]
fn serve_connects_inbound_and_listens_for_outbound_sockets() {
    let (port, commands) = fake_event_socket("not-the-default-1");
    let dir = tempfile::tempdir().unwrap();
    let outbound = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .arg("--config")
        .arg(config(&dir, port, "not-the-default-1", outbound))
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains(&format!("freeswitch socket 127.0.0.1:{outbound}")),
        "{line}"
    );

    // Inbound: ivm logged in with the configured password and subscribed.
    let auth = commands
        .recv_timeout(Duration::from_secs(10))
        .expect("ivm connects inbound");
    assert_eq!(auth.trim(), "auth not-the-default-1");
    let mut subscribed = false;
    while let Ok(command) = commands.recv_timeout(Duration::from_secs(5)) {
        if command.starts_with("event plain") {
            assert!(command.contains("BACKGROUND_JOB"), "{command}");
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "ivm subscribes to the events it needs");

    // Outbound: FreeSWITCH's socket application connects; ivm speaks first
    // with `connect`, as the outbound protocol wants.
    let mut socket =
        TcpStream::connect(("127.0.0.1", outbound)).expect("ivm listens for outbound sockets");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut first = [0u8; 9];
    socket.read_exact(&mut first).expect("ivm sends a command");
    assert_eq!(&first, b"connect\n\n");

    let _ = child.kill();
    let _ = child.wait();
}

/// `ivm doctor` against a real FreeSWITCH with the shipped ivm.xml: every
/// check passes; with the stock `default_password` the 10 s trap is named
/// with its fix; with ivm's address not in the dialplan, the snippet check
/// says what to copy where.
#[test]
fn doctor_against_a_real_freeswitch_names_each_trap() {
    use ivm_testbed::{Freeswitch, FreeswitchOptions};
    if !ivm_testbed::freeswitch::installed() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!ci, "CI is set but FreeSWITCH is not installed");
        eprintln!(
            "SKIPPED: no FreeSWITCH in {}",
            ivm_testbed::freeswitch::PREFIX
        );
        return;
    }
    let doctor = |freeswitch: &Freeswitch, outbound: u16| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ivm.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = \"{}\"\n{}",
                dir.path().join("data").display(),
                freeswitch.ivm_config(outbound)
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ivm"))
            .arg("--config")
            .arg(&file)
            .arg("doctor")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let outbound = free_port();
    let good = Freeswitch::start(FreeswitchOptions {
        outbound_port: outbound,
        stock_password: false,
    })
    .unwrap();
    let (code, text) = doctor(&good, outbound);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("hands IVM codes to ivm"), "{text}");
    assert!(text.contains("enable_file_write_buffering=false"), "{text}");
    let (code, text) = doctor(&good, free_port());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("copy dialplan/freeswitch/ivm.xml"), "{text}");
    drop(good);

    let stock = Freeswitch::start(FreeswitchOptions {
        outbound_port: outbound,
        stock_password: true,
    })
    .unwrap();
    let (code, text) = doctor(&stock, outbound);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("default_password is still 1234")),
        "{text}"
    );
}
