//! `ivm doctor`: checks that what the configuration points at is there and
//! usable, one line per check, each failure saying what to fix.
//!
//! Owns: the checks. Must not know: how the CLI prints them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{AsteriskConfig, Config, FreeswitchConfig, MediaMode};
use crate::proto::ami::AmiAction;
use crate::proto::esl;
use crate::store::Store;
use crate::switch::asterisk::ami::{AmiClient, AmiConnection};
use crate::switch::asterisk::audiosocket_support;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    /// What was checked and what was found; on failure, what to do.
    pub line: String,
}

impl Check {
    fn ok(line: impl Into<String>) -> Self {
        Self {
            ok: true,
            line: line.into(),
        }
    }

    fn fail(line: impl Into<String>) -> Self {
        Self {
            ok: false,
            line: line.into(),
        }
    }
}

/// Run every check that applies to `config`.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks = vec![data_dir(&config.data_dir)];
    if config.asterisk.is_none() && config.freeswitch.is_none() {
        checks.push(Check::fail(
            "no switch configured: add an [asterisk] or [freeswitch] section to ivm.toml",
        ));
    }
    if let Some(asterisk) = &config.asterisk {
        checks.extend(asterisk_checks(asterisk, config.delivery.media).await);
    }
    if let Some(freeswitch) = &config.freeswitch {
        checks.push(event_socket(freeswitch).await);
        checks.push(Check::ok(
            "live media on freeswitch: files (ivm's own stream is Asterisk-only for now)",
        ));
    }
    checks
}

fn data_dir(dir: &Path) -> Check {
    let probe = dir.join(".ivm-doctor-probe");
    let writable = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    if let Err(e) = writable {
        return Check::fail(format!(
            "data directory {} is not writable ({e}): create it or give ivm's user write access, or set --data-dir",
            dir.display()
        ));
    }
    match Store::open(dir) {
        Ok(_) => Check::ok(format!(
            "data directory {} is writable and the database opens",
            dir.display()
        )),
        Err(e) => Check::fail(format!(
            "database in {} cannot be opened: {e}",
            dir.display()
        )),
    }
}

async fn reachable(address: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

async fn asterisk_checks(config: &AsteriskConfig, media: MediaMode) -> Vec<Check> {
    let mut checks = vec![fastagi_port(config.agi_listen).await];
    let address = config.ami_address;
    if let Err(e) = reachable(address).await {
        checks.push(Check::fail(format!(
            "asterisk AMI at {address} is unreachable ({e}): start Asterisk, set enabled = yes and \
             the bindaddr/port in manager.conf [general], or fix [asterisk] ami_address"
        )));
        return checks;
    }
    let ami = AmiClient::start(address, &config.ami_user, &config.ami_secret);
    let connected = ami.wait_connected(LOGIN_TIMEOUT).await;
    let state = ami.connection().borrow().clone();
    if connected.is_err() {
        let why = match state {
            AmiConnection::LoginFailed(message) => format!(
                "login as `{}` refused ({message}): make manager.conf [{}] secret match \
                 [asterisk] ami_secret (see dialplan/asterisk/manager_ivm.conf)",
                config.ami_user, config.ami_user
            ),
            other => format!(
                "no working AMI session ({other}): check that {address} is Asterisk's manager port"
            ),
        };
        checks.push(Check::fail(format!("asterisk AMI at {address}: {why}")));
        ami.shutdown().await;
        return checks;
    }
    checks.push(Check::ok(format!(
        "asterisk AMI at {address} is reachable and accepts user `{}`",
        config.ami_user
    )));
    for (context, what) in [
        ("ivm", "the star codes"),
        (config.context.as_str(), "originated calls"),
    ] {
        let action = AmiAction::new("ShowDialPlan").field("Context", context);
        let found = match ami.send(action).await {
            Ok(response) => response.is_success() && !response.events.is_empty(),
            Err(_) => false,
        };
        checks.push(if found {
            Check::ok(format!("dialplan context [{context}] ({what}) is loaded"))
        } else {
            Check::fail(format!(
                "dialplan context [{context}] ({what}) is not loaded: copy dialplan/asterisk/extensions_ivm.conf \
                 next to extensions.conf, add `#include extensions_ivm.conf`, then `dialplan reload`"
            ))
        });
    }
    checks.push(live_media(&ami, config, media).await);
    ami.shutdown().await;
    checks
}

/// Which live media path `ivm serve` will use on this Asterisk, and why.
async fn live_media(ami: &AmiClient, config: &AsteriskConfig, media: MediaMode) -> Check {
    if media == MediaMode::Files {
        return Check::ok(
            "live media on asterisk: files ([delivery] media = \"files\": the switch records, ivm plays the growing file)",
        );
    }
    let found = match audiosocket_support(ami).await {
        Ok(found) => found,
        Err(why) => {
            return Check::fail(format!(
                "live media on asterisk: files, not stream: {why} (or set [delivery] media = \"files\")"
            ));
        }
    };
    let address = config.media_listen;
    if address.port() != 0
        && let Err(e) = tokio::net::TcpListener::bind(address).await
        // In use is a running `ivm serve`, most likely.
        && e.kind() != std::io::ErrorKind::AddrInUse
    {
        return Check::fail(format!(
            "live media on asterisk: cannot listen for AudioSocket on {address} ({e}): change [asterisk] media_listen"
        ));
    }
    let exposure = if address.ip().is_loopback() {
        "loopback only"
    } else {
        "NOT loopback: AudioSocket has no authentication, keep it reachable by Asterisk only"
    };
    Check::ok(format!(
        "live media on asterisk: stream ({found}); AudioSocket on {address}, {exposure}"
    ))
}

/// The FastAGI address must be free for `ivm serve`, or already served.
async fn fastagi_port(address: SocketAddr) -> Check {
    match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => {
            drop(listener);
            Check::ok(format!("FastAGI address {address} is free for `ivm serve`"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if reachable(address).await.is_ok() {
                Check::ok(format!(
                    "FastAGI address {address} is in use and accepts connections (a running `ivm serve`?)"
                ))
            } else {
                Check::fail(format!(
                    "FastAGI address {address} is taken: stop what uses it or change [asterisk] agi_listen"
                ))
            }
        }
        Err(e) => Check::fail(format!(
            "cannot listen on FastAGI address {address} ({e}): change [asterisk] agi_listen"
        )),
    }
}

/// Connect to FreeSWITCH's event socket and log in.
async fn event_socket(config: &FreeswitchConfig) -> Check {
    let address = config.esl_address;
    let fail = |why: String| Check::fail(format!("freeswitch event socket at {address}: {why}"));
    let mut stream = match reachable(address).await {
        Ok(stream) => stream,
        Err(e) => {
            return fail(format!(
                "unreachable ({e}): start FreeSWITCH, load mod_event_socket, and check listen-ip/listen-port \
                 in event_socket.conf.xml or [freeswitch] esl_address"
            ));
        }
    };
    let mut decoder = esl::Decoder::new();
    let mut buf = BytesMut::new();
    let mut authed = false;
    let result = tokio::time::timeout(LOGIN_TIMEOUT, async {
        loop {
            while let Some(message) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                match message {
                    esl::Message::AuthRequest if !authed => {
                        let auth = esl::auth(&config.esl_password).map_err(|e| e.to_string())?;
                        stream.write_all(auth.as_bytes()).await.map_err(|e| e.to_string())?;
                        authed = true;
                    }
                    esl::Message::CommandReply(reply) if authed => {
                        return Ok::<bool, String>(reply.is_ok());
                    }
                    esl::Message::RudeRejection { .. } => {
                        return Err("refused by its ACL: allow this host in event_socket.conf.xml apply-inbound-acl".into());
                    }
                    _ => {}
                }
            }
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("closed the connection".into());
            }
        }
    })
    .await;
    let _ = stream.write_all(esl::exit().as_bytes()).await;
    match result {
        Ok(Ok(true)) => Check::ok(format!(
            "freeswitch event socket at {address} accepts the password"
        )),
        Ok(Ok(false)) => fail(
            "password refused: make [freeswitch] esl_password match event_socket.conf.xml".into(),
        ),
        Ok(Err(e)) => fail(e),
        Err(_) => fail(format!("no login exchange within {LOGIN_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unwritable_data_dir_fails_with_advice() {
        let check = data_dir(Path::new("/proc/ivm-cannot-be-here"));
        assert!(!check.ok);
        assert!(check.line.contains("not writable"), "{}", check.line);
    }

    #[tokio::test]
    async fn no_switch_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().into(),
            ..Config::default()
        };
        let checks = run(&config).await;
        assert!(checks[0].ok, "{:?}", checks[0]);
        assert!(
            checks
                .iter()
                .any(|c| !c.ok && c.line.contains("no switch configured"))
        );
    }
}
