//! A throwaway FreeSWITCH: the installed build (`/opt/freeswitch`) run with
//! its own `-conf/-log/-run/-db/...` directories, the stock configuration
//! copied and adjusted for loopback (no STUN, 127.0.0.1, own SIP, RTP and
//! event socket ports, a changed `default_password`), and the shipped
//! `dialplan/freeswitch/ivm.xml` loaded unchanged but for ivm's address.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Supervised, TestbedError, free_tcp_port, free_udp_port, rootfs};

/// Where the FreeSWITCH build is installed (its paths are compiled in).
pub const PREFIX: &str = "/opt/freeswitch";
/// The snippet administrators include, loaded unchanged but for the
/// address of ivm's outbound socket listener.
const IVM_SNIPPET: &str = include_str!("../../dialplan/freeswitch/ivm.xml");
const SNIPPET_ADDRESS: &str = "127.0.0.1:8084";
/// The event socket password of the throwaway switch (not the stock
/// `ClueCon`, which `ivm serve` refuses).
pub const ESL_PASSWORD: &str = "ivm-testbed-esl-password";
/// The per-install secret `ivm.xml` sets (`ivm_secret`) and ivm checks.
pub const OUTBOUND_SECRET: &str = "ivm-testbed-outbound-secret";
/// Replaces the stock `default_password` (1234): the SIP password of the
/// directory's users 1000-1019, and what stops the stock dialplan's 10 s
/// sleep.
pub const SIP_PASSWORD: &str = "ivm-testbed-pw";

#[derive(Debug, Clone)]
pub struct FreeswitchOptions {
    /// Where FreeSWITCH finds ivm's outbound socket listener.
    pub outbound_port: u16,
    /// Keep the stock `default_password` (1234), to show the 10 s trap.
    pub stock_password: bool,
}

pub struct Freeswitch {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    sip_port: u16,
    esl_port: u16,
    /// The directory users' SIP password (`default_password`).
    sip_password: &'static str,
    process: Option<Supervised>,
    /// Time from spawn to the internal profile running, last start.
    pub boot_time: Duration,
}

/// Whether the FreeSWITCH build is installed here.
pub fn installed() -> bool {
    Path::new(PREFIX).join("bin/freeswitch").is_file()
}

impl Freeswitch {
    /// Copy and adjust the stock configuration, then start and wait until
    /// the SIP profile runs.
    pub fn start(options: FreeswitchOptions) -> Result<Self, TestbedError> {
        if !installed() {
            return Err(TestbedError::NotReady(format!(
                "no FreeSWITCH in {PREFIX} (install it with `bash ../shared/freeswitch/install.sh`)"
            )));
        }
        // baresip comes from the rootfs the Asterisk testbed provisions.
        let rootfs = rootfs()?;
        let dir = tempfile::Builder::new()
            .prefix("ivm-freeswitch-")
            .tempdir()?;
        let mut freeswitch = Self {
            dir,
            rootfs,
            sip_port: free_udp_port()?,
            esl_port: free_tcp_port()?,
            sip_password: if options.stock_password {
                "1234"
            } else {
                SIP_PASSWORD
            },
            process: None,
            boot_time: Duration::ZERO,
        };
        freeswitch.render(&options)?;
        freeswitch.spawn()?;
        Ok(freeswitch)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// The SIP password of the directory's users 1000-1019.
    pub fn sip_password(&self) -> &str {
        self.sip_password
    }

    pub fn esl_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.esl_port))
    }

    /// The `[freeswitch]` section of an `ivm.toml` for this switch.
    pub fn ivm_config(&self, outbound_port: u16) -> String {
        format!(
            "[freeswitch]\nesl_address = \"{}\"\nesl_password = \"{ESL_PASSWORD}\"\noutbound_listen = \"127.0.0.1:{outbound_port}\"\noutbound_secret = \"{OUTBOUND_SECRET}\"\n",
            self.esl_address()
        )
    }

    /// Stop and start again with the same directories and ports.
    pub fn restart(&mut self) -> Result<(), TestbedError> {
        self.stop();
        self.spawn()
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// The last lines of FreeSWITCH's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("log/freeswitch.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Run an API command over the event socket and return its body.
    pub fn api(&self, command: &str) -> Result<String, TestbedError> {
        esl_api(self.esl_address(), command, Duration::from_secs(10))
            .map_err(|e| TestbedError::NotReady(format!("api {command}: {e}")))
    }

    fn render(&self, options: &FreeswitchOptions) -> Result<(), TestbedError> {
        let run = self.dir.path();
        for sub in [
            "log", "run", "db", "tmp", "rec", "storage", "cache", "sounds",
        ] {
            std::fs::create_dir_all(run.join(sub))?;
        }
        let conf = run.join("conf");
        copy_tree(&Path::new(PREFIX).join("etc/freeswitch"), &conf)?;
        // Only the internal profile, on its own port: the others bind
        // 5080 and IPv6 addresses another switch may hold.
        for profile in ["external.xml", "external-ipv6.xml", "internal-ipv6.xml"] {
            let _ = std::fs::remove_file(conf.join("sip_profiles").join(profile));
        }
        // No WebSocket listeners (fixed ports 5066/7443 another switch holds).
        edit(&conf.join("sip_profiles/internal.xml"), |text| {
            text.lines()
                .filter(|l| !l.contains("\"ws-binding\"") && !l.contains("\"wss-binding\""))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let password = self.sip_password;
        edit(&conf.join("vars.xml"), |text| {
            let text = text
                .replacen(
                    "<include>",
                    "<include>\n  <X-PRE-PROCESS cmd=\"set\" data=\"local_ip_v4=127.0.0.1\"/>",
                    1,
                )
                .replace(
                    "data=\"default_password=1234\"",
                    &format!("data=\"default_password={password}\""),
                )
                .replace(
                    "data=\"domain=$${local_ip_v4}\"",
                    "data=\"domain=127.0.0.1\"",
                )
                .replace(
                    "cmd=\"stun-set\" data=\"external_rtp_ip=stun:stun.freeswitch.org\"",
                    "cmd=\"set\" data=\"external_rtp_ip=127.0.0.1\"",
                )
                .replace(
                    "cmd=\"stun-set\" data=\"external_sip_ip=stun:stun.freeswitch.org\"",
                    "cmd=\"set\" data=\"external_sip_ip=127.0.0.1\"",
                )
                .replace(
                    "data=\"internal_sip_port=5060\"",
                    &format!("data=\"internal_sip_port={}\"", self.sip_port),
                );
            // PCMU end to end, as the phones speak it: no transcoding.
            text.replace(
                "global_codec_prefs=OPUS,G722,PCMU,PCMA,H264,VP8",
                "global_codec_prefs=PCMU,PCMA",
            )
            .replace(
                "outbound_codec_prefs=OPUS,G722,PCMU,PCMA,H264,VP8",
                "outbound_codec_prefs=PCMU,PCMA",
            )
        })?;
        edit(
            &conf.join("autoload_configs/event_socket.conf.xml"),
            |text| {
                text.replace("value=\"::\"", "value=\"127.0.0.1\"")
                    .replace(
                        "name=\"listen-port\" value=\"8021\"",
                        &format!("name=\"listen-port\" value=\"{}\"", self.esl_port),
                    )
                    .replace(
                        "name=\"password\" value=\"ClueCon\"",
                        &format!("name=\"password\" value=\"{ESL_PASSWORD}\""),
                    )
            },
        )?;
        // RTP below the testbed's service ports (31000 up), tested before use.
        edit(&conf.join("autoload_configs/switch.conf.xml"), |text| {
            text.replace(
                "<!-- <param name=\"rtp-start-port\" value=\"16384\"/> -->",
                "<param name=\"rtp-start-port\" value=\"20000\"/>",
            )
            .replace(
                "<!-- <param name=\"rtp-end-port\" value=\"32768\"/> -->",
                "<param name=\"rtp-end-port\" value=\"30000\"/>",
            )
            .replace(
                "<!-- <param name=\"rtp-port-usage-robustness\" value=\"true\"/> -->",
                "<param name=\"rtp-port-usage-robustness\" value=\"true\"/>",
            )
        })?;
        // Plain calls (the benchmark's baseline) ring with a 180, as on the
        // Asterisk testbed: with the stock `ringback` the caller gets early
        // media and its phone starts talking before the answer.
        edit(&conf.join("dialplan/default.xml"), |text| {
            text.replace(
                "<action application=\"set\" data=\"ringback=${us-ring}\"/>",
                "",
            )
        })?;
        let snippet = IVM_SNIPPET
            .replace(
                SNIPPET_ADDRESS,
                &format!("127.0.0.1:{}", options.outbound_port),
            )
            .replace("CHANGE-ME-IVM-SECRET", OUTBOUND_SECRET);
        std::fs::write(conf.join("dialplan/default/ivm.xml"), snippet)?;
        // A stand-in for the users' outbound route, as on the Asterisk
        // testbed: German numbers (`0049…`) ring 1002. ivm reaches it
        // through a loopback leg, which speaks L16: the route names the
        // codecs its far end takes, as a route to a SIP gateway would.
        std::fs::write(
            conf.join("dialplan/default/00_testbed_outbound.xml"),
            "<include>\n  <extension name=\"testbed_outbound_0049\">\n    \
             <condition field=\"destination_number\" expression=\"^0049\\d+$\">\n      \
             <action application=\"bridge\" \
             data=\"{absolute_codec_string=PCMU,PCMA}user/1002@${domain_name}\"/>\n    \
             </condition>\n  </extension>\n</include>\n",
        )?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), TestbedError> {
        let run = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.join("log/console.log"))?;
        let mut cmd = Command::new(Path::new(PREFIX).join("bin/freeswitch"));
        // Foreground, no console.
        cmd.args(["-nf", "-nc", "-nonat"]);
        for (flag, sub) in [
            ("-conf", "conf"),
            ("-log", "log"),
            ("-run", "run"),
            ("-db", "db"),
            ("-temp", "tmp"),
            ("-recordings", "rec"),
            ("-storage", "storage"),
            ("-cache", "cache"),
            ("-sounds", "sounds"),
        ] {
            cmd.arg(flag).arg(run.join(sub));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = Instant::now();
        self.process = Some(Supervised::spawn(cmd, Duration::from_secs(5))?);
        match self.wait_ready(Duration::from_secs(30)) {
            Ok(()) => {
                self.boot_time = started.elapsed();
                Ok(())
            }
            Err(e) => {
                let tail = self.log_tail(30);
                self.stop();
                Err(TestbedError::NotReady(format!(
                    "freeswitch: {e}; log:\n{tail}"
                )))
            }
        }
    }

    /// The event socket answers and the internal SIP profile runs.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(process) = self.process.as_mut()
                && let Some(status) = process.exited()
            {
                return Err(format!("freeswitch exited: {status}"));
            }
            let status = esl_api(self.esl_address(), "sofia status", Duration::from_secs(2));
            let running = |body: &str| {
                body.lines()
                    .any(|l| l.trim_start().starts_with("internal") && l.contains("RUNNING"))
            };
            match status {
                Ok(body) if running(&body) => return Ok(()),
                Ok(body) if Instant::now() >= deadline => {
                    return Err(format!("the internal profile is not running: {body}"));
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Freeswitch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn edit(path: &Path, change: impl FnOnce(String) -> String) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    std::fs::write(path, change(text))
}

/// One `api` command on a fresh event socket connection: its body.
pub fn esl_api(address: SocketAddr, command: &str, limit: Duration) -> Result<String, String> {
    let err = |e: std::io::Error| e.to_string();
    let stream = TcpStream::connect_timeout(&address, limit).map_err(err)?;
    stream.set_read_timeout(Some(limit)).map_err(err)?;
    let mut writer = stream.try_clone().map_err(err)?;
    let mut reader = BufReader::new(stream);
    let (head, _) = read_frame(&mut reader)?;
    if !head.contains("auth/request") {
        return Err(format!("no auth request: {head}"));
    }
    write!(writer, "auth {ESL_PASSWORD}\n\n").map_err(err)?;
    let (head, _) = read_frame(&mut reader)?;
    if !head.contains("+OK") {
        return Err(format!("auth refused: {head}"));
    }
    write!(writer, "api {command}\n\n").map_err(err)?;
    let (_, body) = read_frame(&mut reader)?;
    let _ = writer.write_all(b"exit\n\n");
    Ok(body)
}

/// One event socket frame: the header block and its body.
fn read_frame(reader: &mut impl BufRead) -> Result<(String, String), String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("the event socket closed".into()),
            Ok(_) if line == "\n" && !head.is_empty() => break,
            Ok(_) if line == "\n" => {}
            Ok(_) => head.push_str(&line),
            Err(e) => return Err(e.to_string()),
        }
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((head, String::from_utf8_lossy(&body).into_owned()))
}
