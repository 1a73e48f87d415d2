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
    let weak = config.weak_secrets();
    if config.asterisk.is_some() || config.freeswitch.is_some() {
        if weak.is_empty() {
            checks.push(Check::ok("no empty or default secrets"));
        }
        // `ivm serve` refuses to run with these.
        checks.extend(weak.into_iter().map(Check::fail));
    }
    if let Some(asterisk) = &config.asterisk {
        checks.extend(asterisk_checks(asterisk, config.delivery.media).await);
    }
    if let Some(freeswitch) = &config.freeswitch {
        checks.extend(freeswitch_checks(freeswitch).await);
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

/// One event socket connection of the doctor: log in, then `api` commands.
struct EslProbe {
    stream: TcpStream,
    decoder: esl::Decoder,
    buf: BytesMut,
}

impl EslProbe {
    /// The next message, within `LOGIN_TIMEOUT`.
    async fn next(&mut self) -> Result<esl::Message, String> {
        tokio::time::timeout(LOGIN_TIMEOUT, async {
            loop {
                if let Some(message) = self
                    .decoder
                    .decode(&mut self.buf)
                    .map_err(|e| e.to_string())?
                {
                    return Ok(message);
                }
                if self
                    .stream
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| e.to_string())?
                    == 0
                {
                    return Err("closed the connection".to_owned());
                }
            }
        })
        .await
        .map_err(|_| format!("no answer within {LOGIN_TIMEOUT:?}"))?
    }

    /// Log in: `Ok(false)` when the password is refused.
    async fn login(&mut self, password: &str) -> Result<bool, String> {
        let mut authed = false;
        loop {
            match self.next().await? {
                esl::Message::AuthRequest if !authed => {
                    let auth = esl::auth(password).map_err(|e| e.to_string())?;
                    self.stream
                        .write_all(auth.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    authed = true;
                }
                esl::Message::CommandReply(reply) if authed => return Ok(reply.is_ok()),
                esl::Message::RudeRejection { .. } => {
                    return Err("refused by its ACL: allow this host in event_socket.conf.xml apply-inbound-acl".into());
                }
                _ => {}
            }
        }
    }

    /// An API command's output.
    async fn api(&mut self, command: &str) -> Result<String, String> {
        let text = esl::api(command).map_err(|e| e.to_string())?;
        self.stream
            .write_all(text.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            if let esl::Message::ApiResponse(response) = self.next().await? {
                return Ok(response.body);
            }
        }
    }
}

/// FreeSWITCH: the event socket login, then what the switch must have for
/// ivm to work: the dialplan snippet loaded and pointing at ivm, its
/// recording variables, and no 10 s sleep on every call.
async fn freeswitch_checks(config: &FreeswitchConfig) -> Vec<Check> {
    let address = config.esl_address;
    let fail = |why: String| Check::fail(format!("freeswitch event socket at {address}: {why}"));
    let stream = match reachable(address).await {
        Ok(stream) => stream,
        Err(e) => {
            return vec![fail(format!(
                "unreachable ({e}): start FreeSWITCH, load mod_event_socket, and check listen-ip/listen-port \
                 in event_socket.conf.xml or [freeswitch] esl_address"
            ))];
        }
    };
    let mut probe = EslProbe {
        stream,
        decoder: esl::Decoder::new(),
        buf: BytesMut::new(),
    };
    let mut checks = match probe.login(&config.esl_password).await {
        Ok(true) => vec![Check::ok(format!(
            "freeswitch event socket at {address} accepts the password"
        ))],
        Ok(false) => {
            return vec![fail(
                "password refused: make [freeswitch] esl_password match event_socket.conf.xml"
                    .into(),
            )];
        }
        Err(e) => return vec![fail(e)],
    };
    checks.push(match probe.api("global_getvar default_password").await {
        Ok(value) if value.trim() == "1234" => Check::fail(
            "freeswitch's default_password is still 1234: the stock dialplan then sleeps 10 s \
             on every call before ivm gets it; change default_password in vars.xml \
             (and the phones' passwords with it), then restart FreeSWITCH",
        ),
        Ok(_) => Check::ok("freeswitch's default_password is changed (no 10 s sleep on each call)"),
        Err(e) => fail(format!("global_getvar default_password: {e}")),
    });
    match probe.api("xml_locate dialplan").await {
        Ok(xml) => checks.extend(snippet_check(&xml, config.outbound_listen)),
        Err(e) => checks.push(fail(format!("xml_locate dialplan: {e}"))),
    }
    let _ = probe.stream.write_all(esl::exit().as_bytes()).await;
    checks
}

/// The loaded dialplan (`xml_locate dialplan`) hands IVM codes to ivm: an
/// extension runs `socket` at ivm's outbound address, after setting the
/// recording variables that make the file grow every 20 ms.
fn snippet_check(xml: &str, outbound: SocketAddr) -> Vec<Check> {
    let port = format!(":{}", outbound.port());
    let target = |data: &str| {
        let address = data.split_whitespace().next().unwrap_or_default();
        if outbound.ip().is_unspecified() {
            address.ends_with(&port)
        } else {
            address == outbound.to_string()
        }
    };
    // Each extension's text, from `<extension` to `</extension>`.
    let extensions: Vec<&str> = xml
        .split("<extension")
        .skip(1)
        .map(|e| e.split("</extension>").next().unwrap_or(e))
        .collect();
    let socket_data = |extension: &str| -> Vec<String> {
        extension
            .split("application=\"socket\"")
            .skip(1)
            .filter_map(|rest| rest.split("data=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    };
    let ours: Vec<&&str> = extensions
        .iter()
        .filter(|e| socket_data(e).iter().any(|d| target(d)))
        .collect();
    let Some(extension) = ours.first() else {
        let elsewhere: Vec<String> = extensions.iter().flat_map(|e| socket_data(e)).collect();
        let hint = if elsewhere.is_empty() {
            String::new()
        } else {
            format!(" (socket applications found: {})", elsewhere.join(", "))
        };
        return vec![Check::fail(format!(
            "no extension in freeswitch's dialplan hands calls to ivm at {outbound}{hint}: \
             copy dialplan/freeswitch/ivm.xml into conf/dialplan/default/, set its socket \
             address to [freeswitch] outbound_listen, then `fs_cli -x reloadxml`"
        ))];
    };
    let mut checks = vec![Check::ok(format!(
        "freeswitch's dialplan hands IVM codes to ivm at {outbound}"
    ))];
    let missing: Vec<&str> = [
        "enable_file_write_buffering=false",
        "RECORD_PRE_BUFFER_FRAMES=1",
        "send_silence_when_idle=-1",
    ]
    .into_iter()
    .filter(|v| !extension.contains(v))
    .collect();
    checks.push(if missing.is_empty() {
        Check::ok("the ivm extension sets enable_file_write_buffering=false, RECORD_PRE_BUFFER_FRAMES=1 and send_silence_when_idle=-1")
    } else {
        Check::fail(format!(
            "the ivm extension does not set {}: without the first two a recording reaches disk \
             64 KiB (~4 s) at a time and a target hears the message seconds late; without the \
             last a caller does not hear the tones played while they talk; use the shipped ivm.xml",
            missing.join(" and ")
        ))
    });
    checks
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

    #[test]
    fn the_dialplan_snippet_is_found_by_its_socket_address() {
        let outbound = SocketAddr::from(([127, 0, 0, 1], 8084));
        let shipped = include_str!("../dialplan/freeswitch/ivm.xml");
        let xml = format!("<document><context name=\"default\">{shipped}</context></document>");
        let checks = snippet_check(&xml, outbound);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        let elsewhere = snippet_check(&xml, SocketAddr::from(([127, 0, 0, 1], 9999)));
        assert!(!elsewhere[0].ok);
        assert!(
            elsewhere[0].line.contains("127.0.0.1:8084"),
            "{:?}",
            elsewhere[0]
        );
        let bare = xml.replace("enable_file_write_buffering=false", "x=y");
        let checks = snippet_check(&bare, outbound);
        assert!(checks[0].ok && !checks[1].ok, "{checks:?}");
        assert!(checks[1].line.contains("enable_file_write_buffering=false"));
        assert!(!snippet_check("<document/>", outbound)[0].ok);
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
