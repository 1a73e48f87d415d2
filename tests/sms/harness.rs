//! Real SMS gateways for tests, started and stopped by the test itself on
//! loopback ports chosen per test: Kannel 1.4.5 (bearerbox, smsbox and its
//! fake SMSC) and an SMPP 3.4 SMSC on Perl's Net::SMPP (`smsc.pl`).
//! Missing Debian packages are installed when running as root; otherwise
//! the test fails saying what to install. Every wait is on an observable
//! effect (a status page line, a log line), bounded by a timeout.
//!
//! Include with `#[path = "sms/harness.rs"] mod harness;`.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

pub const PACKAGES: [&str; 3] = ["kannel", "kannel-extras", "libnet-smpp-perl"];
const BEARERBOX: &str = "/usr/sbin/bearerbox";
const SMSBOX: &str = "/usr/sbin/smsbox";
const FAKESMSC: &str = "/usr/lib/kannel/test/fakesmsc";
const STATUS_PASSWORD: &str = "statuspw";
pub const SENDSMS_USER: &str = "tester";
pub const SENDSMS_PASSWORD: &str = "foobar";

/// Install the packages once per test binary when missing (root only).
pub fn ensure_packages() {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = RESULT.get_or_init(install_if_missing) {
        panic!("{e}");
    }
}

fn packages_present() -> bool {
    [BEARERBOX, SMSBOX, FAKESMSC]
        .iter()
        .all(|p| Path::new(p).exists())
        && std::process::Command::new("perl")
            .args(["-MNet::SMPP", "-e", "1"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn install_if_missing() -> Result<(), String> {
    if packages_present() {
        return Ok(());
    }
    let wanted = PACKAGES.join(" ");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "these tests need the Debian packages {wanted}: run `sudo apt-get install -y {wanted}`"
        ));
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "-q"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y"];
    install.extend(PACKAGES);
    if !apt(&install) {
        // A fresh machine may have no package lists yet.
        apt(&["update"]);
        apt(&install);
    }
    if packages_present() {
        Ok(())
    } else {
        Err(format!(
            "could not install {wanted} with apt-get; install them by hand: `apt-get install -y {wanted}`"
        ))
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1, outside the range
/// outgoing connections take theirs from (see `ivm_testbed::free_tcp_port`).
pub fn free_port() -> u16 {
    ivm_testbed::free_tcp_port().expect("a free loopback port")
}

/// Poll `probe` until it yields a value; panic with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file in the test's temp dir");
    let clone = file.try_clone().expect("log file handle");
    (Stdio::from(file), Stdio::from(clone))
}

/// Spawn in its own process group, so that the group can be killed (smsbox
/// re-runs itself under a new PID when bearerbox dies).
fn spawn(program: &str, args: &[&str], log: &Path) -> Child {
    let (out, err) = log_file(log);
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

fn kill_group(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill has no memory-safety preconditions; the group is ours.
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}

/// Kannel with the fake SMSC. `new` only writes the config; `start` and
/// `stop` may alternate, keeping the store and the fake SMSC's log.
pub struct Kannel {
    dir: tempfile::TempDir,
    conf: PathBuf,
    pub admin_port: u16,
    pub smsbox_port: u16,
    pub fake_port: u16,
    pub sendsms_port: u16,
    boxes: Vec<(&'static str, Child)>,
    http: reqwest::Client,
}

impl Kannel {
    pub fn new() -> Self {
        ensure_packages();
        let dir = tempfile::tempdir().expect("temp dir");
        let (admin_port, smsbox_port, fake_port, sendsms_port) =
            (free_port(), free_port(), free_port(), free_port());
        let template = include_str!("kannel.conf.in");
        let text = template
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@ADMIN_PORT@", &admin_port.to_string())
            .replace("@SMSBOX_PORT@", &smsbox_port.to_string())
            .replace("@FAKE_PORT@", &fake_port.to_string())
            .replace("@SENDSMS_PORT@", &sendsms_port.to_string());
        let conf = dir.path().join("kannel.conf");
        std::fs::write(&conf, text).expect("write kannel.conf");
        Self {
            dir,
            conf,
            admin_port,
            smsbox_port,
            fake_port,
            sendsms_port,
            boxes: Vec::new(),
            http: reqwest::Client::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    /// bearerbox's `status.txt`, if it answers.
    pub async fn status(&self) -> Option<String> {
        let url = format!(
            "http://127.0.0.1:{}/status.txt?password={STATUS_PASSWORD}",
            self.admin_port
        );
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// Start the three boxes in order, each once the previous is ready.
    pub async fn start(&mut self) {
        assert!(self.boxes.is_empty(), "Kannel is already running");
        let conf = self.conf.display().to_string();
        let dir = self.dir.path().to_owned();
        let limit = Duration::from_secs(15);
        let bearerbox = spawn(BEARERBOX, &["-v", "1", &conf], &dir.join("bearerbox.out"));
        self.boxes.push(("bearerbox", bearerbox));
        wait_for("bearerbox's status page", limit, || self.status()).await;
        let fake_port = self.fake_port.to_string();
        let fakesmsc = spawn(
            FAKESMSC,
            &[
                "-H",
                "127.0.0.1",
                "-r",
                &fake_port,
                "-m",
                "0",
                "0 0 text unused",
            ],
            &dir.join("fakesmsc.out"),
        );
        self.boxes.push(("fakesmsc", fakesmsc));
        let online = format!("FAKE:{} (online", self.fake_port);
        wait_for("the fake SMSC online", limit, || async {
            self.status().await.filter(|s| s.contains(&online))
        })
        .await;
        let smsbox = spawn(SMSBOX, &["-v", "1", &conf], &dir.join("smsbox.out"));
        self.boxes.push(("smsbox", smsbox));
        wait_for("smsbox connected to bearerbox", limit, || async {
            self.status()
                .await
                .filter(|s| s.lines().any(|l| l.trim_start().starts_with("smsbox:")))
        })
        .await;
        let sendsms = format!("127.0.0.1:{}", self.sendsms_port);
        wait_for("smsbox's sendsms port", limit, || async {
            tokio::net::TcpStream::connect(&sendsms).await.ok()
        })
        .await;
    }

    /// SIGTERM bearerbox (smsbox and the fake SMSC follow it), then reap all.
    pub async fn stop(&mut self) {
        if let Some((_, bearerbox)) = self.boxes.iter().find(|(name, _)| *name == "bearerbox")
            && let Some(pid) = bearerbox.id()
        {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        for (name, mut child) in self.boxes.drain(..) {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                eprintln!("{name} did not stop after SIGTERM; killing it");
                kill_group(&child, libc::SIGKILL);
                let _ = child.wait().await;
            }
        }
    }

    /// Every MT the fake SMSC received, across restarts, as `FROM TO TYPE BODY`.
    pub fn fake_smsc_messages(&self) -> Vec<String> {
        let log = std::fs::read(self.dir.path().join("fakesmsc.out")).unwrap_or_default();
        String::from_utf8_lossy(&log)
            .lines()
            .filter_map(|l| l.split_once("Got message ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once(": <").map(|(_, m)| m))
            .map(|m| m.strip_suffix('>').unwrap_or(m).to_owned())
            .collect()
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        for (_, child) in &self.boxes {
            kill_group(child, libc::SIGKILL);
        }
    }
}

/// `smsc.pl`: an SMPP 3.4 SMSC on Net::SMPP. Its stdout is one event a line.
pub struct PerlSmsc {
    pub port: u16,
    child: Child,
    // Kept open: EOF on stdin is harmless, but MO lines are written here.
    stdin: Option<ChildStdin>,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl PerlSmsc {
    /// Start it; with `password`, binds with another password are refused.
    pub async fn start(password: Option<&str>) -> Self {
        Self::start_on(free_port(), password).await
    }

    /// Start it on a given port (e.g. one a client has been failing to reach).
    pub async fn start_on(port: u16, password: Option<&str>) -> Self {
        ensure_packages();
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("smsc.out");
        let (stdout, _) = log_file(&out);
        let (stderr, _) = log_file(&dir.path().join("smsc.err"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sms/smsc.pl");
        let mut command = Command::new("perl");
        command
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(password) = password {
            command.env("SMSC_PASSWORD", password);
        }
        let mut child = command.spawn().expect("start perl smsc.pl");
        let stdin = child.stdin.take();
        let smsc = Self {
            port,
            child,
            stdin,
            out,
            _dir: dir,
        };
        let ready = format!("READY port={port}");
        wait_for("smsc.pl READY", Duration::from_secs(10), || async {
            smsc.lines().contains(&ready).then_some(())
        })
        .await;
        smsc
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Wait for a line starting with `prefix`; returns it.
    pub async fn wait_line(&self, prefix: &str) -> String {
        wait_for(
            &format!("smsc.pl to print `{prefix}`"),
            Duration::from_secs(10),
            || async { self.lines().into_iter().find(|l| l.starts_with(prefix)) },
        )
        .await
    }
}

impl Drop for PerlSmsc {
    fn drop(&mut self) {
        self.stdin.take();
        kill_group(&self.child, libc::SIGKILL);
    }
}
