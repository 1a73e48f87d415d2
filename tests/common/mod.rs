//! Shared harness of the end-to-end tests: `ivm serve` as a child process
//! against the testbed Asterisk or FreeSWITCH.

#![allow(dead_code)]

pub mod launch;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ivm_testbed::{
    Asterisk, AsteriskOptions, Freeswitch, FreeswitchOptions, SipServer, free_tcp_port,
};

pub struct Ivm {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Ivm {
    /// Write a config for the testbed Asterisk and start `ivm serve`.
    pub fn start(asterisk: &Asterisk, agi_port: u16, extra: &str) -> Self {
        let section = format!(
            "[asterisk]\nagi_listen = \"127.0.0.1:{agi_port}\"\nami_address = \"{}\"\nami_secret = \"{}\"\nagi_secret = \"{}\"\n",
            asterisk.ami_address(),
            ivm_testbed::AMI_SECRET,
            ivm_testbed::AGI_SECRET,
        );
        Self::start_with(&section, extra)
    }

    /// Start `ivm serve` for the switch of `pbx`.
    pub fn start_on(pbx: &Pbx, extra: &str) -> Self {
        Self::start_with(&pbx.ivm_section(), extra)
    }

    /// [`start`](Self::start) without starting: the test prepares the data
    /// directory (`data_dir()`) first, then calls [`spawn`](Self::spawn).
    pub fn unstarted(asterisk: &Asterisk, agi_port: u16, extra: &str) -> Self {
        let section = format!(
            "[asterisk]\nagi_listen = \"127.0.0.1:{agi_port}\"\nami_address = \"{}\"\nami_secret = \"{}\"\nagi_secret = \"{}\"\n",
            asterisk.ami_address(),
            ivm_testbed::AMI_SECRET,
            ivm_testbed::AGI_SECRET,
        );
        Self::configured(&section, extra)
    }

    /// Write a config (`extra` first, then the switch's `section`) and start
    /// `ivm serve`.
    pub fn start_with(section: &str, extra: &str) -> Self {
        let mut ivm = Self::configured(section, extra);
        ivm.spawn();
        ivm
    }

    fn configured(section: &str, extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ivm-serve-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("ivm.toml");
        // Secrets in it: owner only, as an administrator would keep it.
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n{extra}\n{section}",
                dir.path().join("data").display(),
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            child: None,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)start the server and wait for its ready line.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ivm.log"))
            .unwrap();
        let mut child = launch::ivm_command()
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("IVM_LOG", "ivm=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start ivm serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("ivm: serving"),
            "ivm serve did not start: {line:?}\n{}",
            self.log()
        );
        self.child = Some(child);
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Send SIGTERM (a service manager's stop).
    pub fn sigterm(&self) {
        let child = self.child.as_ref().expect("ivm serve is running");
        // SAFETY: a signal to our own child, by its pid.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
    }

    /// Whether `ivm serve` is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Wait up to `limit` for `ivm serve` to exit; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("ivm serve is running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ivm serve did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ivm.log")).unwrap_or_default()
    }

    /// Run an `ivm` admin command on this server's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        launch::ivm_command()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn messages(&self) -> serde_json::Value {
        let out = self.cli(&["message", "list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Wait until `ivm message list` satisfies `done`.
    pub fn wait_messages(
        &self,
        limit: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let list = self.messages();
            if done(&list) {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "message list never got there: {list:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ivm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Which switch a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchKind {
    Asterisk,
    Freeswitch,
}

/// A throwaway switch with the port ivm must listen on for it.
pub enum Pbx {
    Asterisk {
        asterisk: Asterisk,
        agi_port: u16,
    },
    Freeswitch {
        freeswitch: Freeswitch,
        outbound_port: u16,
    },
}

impl Pbx {
    /// Start a switch of `kind`; `None` (with a message saying why) when
    /// FreeSWITCH is not installed here and this is not CI (`CI` set: the
    /// test fails instead).
    pub fn start(kind: SwitchKind) -> Option<Self> {
        tokio::task::block_in_place(|| match kind {
            SwitchKind::Asterisk => {
                let (asterisk, agi_port) = asterisk();
                Some(Pbx::Asterisk { asterisk, agi_port })
            }
            SwitchKind::Freeswitch => {
                if !ivm_testbed::freeswitch::installed() {
                    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
                    assert!(
                        !ci,
                        "CI is set but FreeSWITCH is not installed in {}: run `bash ../shared/freeswitch/install.sh`",
                        ivm_testbed::freeswitch::PREFIX
                    );
                    eprintln!(
                        "SKIPPED: no FreeSWITCH in {} (install it with `bash ../shared/freeswitch/install.sh`)",
                        ivm_testbed::freeswitch::PREFIX
                    );
                    return None;
                }
                let outbound_port = free_tcp_port().unwrap();
                let freeswitch = Freeswitch::start(FreeswitchOptions {
                    outbound_port,
                    stock_password: false,
                })
                .unwrap();
                Some(Pbx::Freeswitch {
                    freeswitch,
                    outbound_port,
                })
            }
        })
    }

    pub fn kind(&self) -> SwitchKind {
        match self {
            Pbx::Asterisk { .. } => SwitchKind::Asterisk,
            Pbx::Freeswitch { .. } => SwitchKind::Freeswitch,
        }
    }

    /// What the phones register to.
    pub fn sip(&self) -> &dyn SipServer {
        match self {
            Pbx::Asterisk { asterisk, .. } => asterisk,
            Pbx::Freeswitch { freeswitch, .. } => freeswitch,
        }
    }

    /// The switch's section of `ivm.toml`.
    pub fn ivm_section(&self) -> String {
        match self {
            Pbx::Asterisk { asterisk, agi_port } => format!(
                "[asterisk]\nagi_listen = \"127.0.0.1:{agi_port}\"\nami_address = \"{}\"\nami_secret = \"{}\"\nagi_secret = \"{}\"\n",
                asterisk.ami_address(),
                ivm_testbed::AMI_SECRET,
                ivm_testbed::AGI_SECRET,
            ),
            Pbx::Freeswitch {
                freeswitch,
                outbound_port,
            } => freeswitch.ivm_config(*outbound_port),
        }
    }

    /// The switch's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            Pbx::Asterisk { asterisk, .. } => asterisk.log_tail(lines),
            Pbx::Freeswitch { freeswitch, .. } => freeswitch.log_tail(lines),
        }
    }

    /// Whether the switch itself has a registration of `extension` (Asterisk:
    /// a PJSIP contact; FreeSWITCH: a sofia registration).
    pub fn has_registration(&self, extension: &str) -> bool {
        tokio::task::block_in_place(|| match self {
            Pbx::Asterisk { asterisk, .. } => asterisk
                .cli("pjsip show contacts")
                .unwrap()
                .contains(&format!("{extension}/sip:")),
            Pbx::Freeswitch { freeswitch, .. } => freeswitch
                .api("show registrations")
                .unwrap()
                .lines()
                .any(|l| l.starts_with(&format!("{extension},"))),
        })
    }

    /// Restart the switch (same ports, same configuration).
    pub fn restart(&mut self) {
        tokio::task::block_in_place(|| match self {
            Pbx::Asterisk { asterisk, .. } => asterisk.restart().unwrap(),
            Pbx::Freeswitch { freeswitch, .. } => freeswitch.restart().unwrap(),
        })
    }
}

pub fn asterisk() -> (Asterisk, u16) {
    let agi_port = free_tcp_port().unwrap();
    let asterisk =
        tokio::task::block_in_place(|| Asterisk::start(AsteriskOptions { agi_port })).unwrap();
    (asterisk, agi_port)
}

/// Read a WAV's 16-bit samples (the testbed phones write 8 kHz mono).
pub fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_default();
    // Find the data chunk.
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]]) as usize;
        if &bytes[i..i + 4] == b"data" {
            // A WAV still being written says 0 (or too much): read to the end.
            let end = if len == 0 {
                bytes.len()
            } else {
                (i + 8 + len).min(bytes.len())
            };
            let data = &bytes[i + 8..end];
            return data
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
        }
        i += 8 + len;
    }
    Vec::new()
}

/// 8 kHz: a steady tone of `freq` for `ms`, at a level a phone path keeps.
pub fn tone(freq: f64, ms: u32) -> Vec<i16> {
    (0..ms as usize * 8)
        .map(|i| ((2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin() * 9000.0) as i16)
        .collect()
}

pub fn silence(ms: u32) -> Vec<i16> {
    vec![0; ms as usize * 8]
}

/// Share of a block's energy at `freq` (Goertzel), 0..1.
fn tone_share(block: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &x in block {
        let x = f64::from(x);
        let s = x + k * s1 - s2;
        s2 = s1;
        s1 = s;
        energy += x * x;
    }
    if energy < 1e3 * block.len() as f64 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - k * s1 * s2;
    (2.0 * power / (block.len() as f64 * energy)).min(1.0)
}

/// Milliseconds of `samples` (8 kHz) dominated by a tone of `freq`.
pub fn tone_ms(samples: &[i16], freq: f64) -> u32 {
    samples
        .chunks_exact(160)
        .filter(|b| tone_share(b, freq) > 0.6)
        .count() as u32
        * 20
}

/// The stored WAV of the only message in `data_dir`.
pub fn stored_wav(data_dir: &Path) -> Vec<i16> {
    let dir = data_dir.join("messages");
    let wav = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "wav"))
        .unwrap_or_else(|| panic!("no WAV in {}", dir.display()));
    read_wav(&wav)
}

/// A one-shot-per-request webhook receiver: each request body, with when
/// it arrived, goes to the channel; each is answered 200.
pub fn webhook() -> (u16, mpsc::Receiver<(Instant, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx
                .send((Instant::now(), String::from_utf8_lossy(&body).into_owned()))
                .is_err()
            {
                return;
            }
        }
    });
    (port, rx)
}
