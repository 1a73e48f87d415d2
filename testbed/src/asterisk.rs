//! One isolated Asterisk 22: its own directory and loopback ports, the
//! administrator's `dialplan/asterisk/` snippet loaded as shipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Supervised, TestbedError, free_tcp_port, free_udp_port, rootfs, rootfs_command};

/// Configuration templates; `@@NAME@@` placeholders are filled per instance.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "acl.conf",
        include_str!("../../tests/asterisk/conf/acl.conf"),
    ),
    (
        "asterisk.conf",
        include_str!("../../tests/asterisk/conf/asterisk.conf"),
    ),
    (
        "ccss.conf",
        include_str!("../../tests/asterisk/conf/ccss.conf"),
    ),
    (
        "cdr.conf",
        include_str!("../../tests/asterisk/conf/cdr.conf"),
    ),
    (
        "cel.conf",
        include_str!("../../tests/asterisk/conf/cel.conf"),
    ),
    (
        "extensions.conf",
        include_str!("../../tests/asterisk/conf/extensions.conf"),
    ),
    (
        "features.conf",
        include_str!("../../tests/asterisk/conf/features.conf"),
    ),
    (
        "indications.conf",
        include_str!("../../tests/asterisk/conf/indications.conf"),
    ),
    (
        "logger.conf",
        include_str!("../../tests/asterisk/conf/logger.conf"),
    ),
    (
        "manager.conf",
        include_str!("../../tests/asterisk/conf/manager.conf"),
    ),
    (
        "modules.conf",
        include_str!("../../tests/asterisk/conf/modules.conf"),
    ),
    (
        "pjproject.conf",
        include_str!("../../tests/asterisk/conf/pjproject.conf"),
    ),
    (
        "pjsip.conf",
        include_str!("../../tests/asterisk/conf/pjsip.conf"),
    ),
    (
        "pjsip_notify.conf",
        include_str!("../../tests/asterisk/conf/pjsip_notify.conf"),
    ),
    (
        "stasis.conf",
        include_str!("../../tests/asterisk/conf/stasis.conf"),
    ),
    (
        "udptl.conf",
        include_str!("../../tests/asterisk/conf/udptl.conf"),
    ),
];

/// The snippet administrators include, loaded unchanged but for the address
/// of ivm's FastAGI listener.
const IVM_SNIPPET: &str = include_str!("../../dialplan/asterisk/extensions_ivm.conf");
const SNIPPET_AGI_ADDRESS: &str = "127.0.0.1:4573";
/// The AMI user administrators include, loaded with the testbed's secret:
/// every test runs with exactly the classes it grants.
const MANAGER_SNIPPET: &str = include_str!("../../dialplan/asterisk/manager_ivm.conf");
const MANAGER_SNIPPET_SECRET: &str = "secret = change-me";

pub const AMI_USER: &str = "ivm";
/// Not a default `ivm serve` refuses.
pub const AMI_SECRET: &str = "testbed-ami-secret-5c2e91";
/// `IVM_AGI_SECRET` in the testbed's `[globals]`, `[asterisk] agi_secret`.
pub const AGI_SECRET: &str = "testbed-agi-secret-8d41f7";

#[derive(Debug, Clone)]
pub struct AsteriskOptions {
    /// Where Asterisk finds ivm's FastAGI server.
    pub agi_port: u16,
}

pub struct Asterisk {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    sip_port: u16,
    ami_port: u16,
    agi_port: u16,
    process: Option<Supervised>,
    /// Time from spawn to the AMI `FullyBooted` event, last start.
    pub boot_time: Duration,
}

impl Asterisk {
    /// Provision (first use only), render the configuration and start.
    pub fn start(options: AsteriskOptions) -> Result<Self, TestbedError> {
        let rootfs = rootfs()?;
        let dir = tempfile::Builder::new().prefix("ivm-asterisk-").tempdir()?;
        let mut asterisk = Self {
            dir,
            rootfs,
            sip_port: free_udp_port()?,
            ami_port: free_tcp_port()?,
            agi_port: options.agi_port,
            process: None,
            boot_time: Duration::ZERO,
        };
        asterisk.render()?;
        asterisk.spawn()?;
        Ok(asterisk)
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

    pub fn ami_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ami_port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::id)
    }

    /// Stop (SIGTERM; it exits in well under a second) and start again with
    /// the same directory and ports, as an administrator's restart would.
    pub fn restart(&mut self) -> Result<(), TestbedError> {
        self.stop();
        self.spawn()
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// The last lines of Asterisk's console log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("log/console.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Run an Asterisk CLI command through a remote console (`-rx`).
    pub fn cli(&self, command: &str) -> Result<String, TestbedError> {
        let out = rootfs_command(&self.rootfs, "usr/sbin/asterisk")
            .arg("-C")
            .arg(self.dir.path().join("etc/asterisk.conf"))
            .arg("-rx")
            .arg(command)
            .stdin(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn render(&self) -> Result<(), TestbedError> {
        let run = self.dir.path();
        for sub in [
            "etc",
            "var",
            "spool",
            "run",
            "log",
            "agi-bin",
            "data/sounds",
        ] {
            std::fs::create_dir_all(run.join(sub))?;
        }
        let fill = |text: &str| {
            text.replace("@@RUN@@", &run.display().to_string())
                .replace("@@ROOTFS@@", &self.rootfs.display().to_string())
                .replace("@@SIP_PORT@@", &self.sip_port.to_string())
                .replace("@@AMI_PORT@@", &self.ami_port.to_string())
                .replace("@@AGI_PORT@@", &self.agi_port.to_string())
                .replace("@@AGI_SECRET@@", AGI_SECRET)
        };
        for (name, template) in TEMPLATES {
            std::fs::write(run.join("etc").join(name), fill(template))?;
        }
        let snippet =
            IVM_SNIPPET.replace(SNIPPET_AGI_ADDRESS, &format!("127.0.0.1:{}", self.agi_port));
        std::fs::write(run.join("etc/extensions_ivm.conf"), snippet)?;
        let manager =
            MANAGER_SNIPPET.replace(MANAGER_SNIPPET_SECRET, &format!("secret = {AMI_SECRET}"));
        std::fs::write(run.join("etc/manager_ivm.conf"), manager)?;
        // The rootfs's sounds/en is an absolute link into its /etc/alternatives.
        // Without the XML documentation Asterisk 22 hangs before AMI opens.
        let links = [
            (
                "data/sounds/en",
                "usr/share/asterisk/sounds/en_US_f_Allison",
            ),
            ("data/documentation", "usr/share/asterisk/documentation"),
        ];
        for (link, target) in links {
            let link = run.join(link);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(self.rootfs.join(target), link)?;
            }
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), TestbedError> {
        let run = self.dir.path();
        // Registrations persist in astdb; every start begins clean.
        let _ = std::fs::remove_file(run.join("var/astdb.sqlite3"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.join("log/console.log"))?;
        let mut cmd: Command = rootfs_command(&self.rootfs, "usr/sbin/asterisk");
        cmd.arg("-f")
            .arg("-C")
            .arg(run.join("etc/asterisk.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = Instant::now();
        self.process = Some(Supervised::spawn(cmd, Duration::from_secs(3))?);
        match self.wait_fully_booted(Duration::from_secs(30)) {
            // With autoload off a module that fails only logs an error and
            // Asterisk boots anyway: a half-configured switch fails here.
            Ok(())
                if {
                    let log = self.log_tail(10_000);
                    log.contains("Error loading module") || log.contains("declined to load")
                } =>
            {
                let tail = self.log_tail(20);
                self.stop();
                Err(TestbedError::NotReady(format!(
                    "a module failed to load:\n{tail}"
                )))
            }
            Ok(()) => {
                self.boot_time = started.elapsed();
                Ok(())
            }
            Err(e) => {
                let tail = self.log_tail(20);
                self.stop();
                Err(TestbedError::NotReady(format!("{e}; console log:\n{tail}")))
            }
        }
    }

    /// Log in to AMI and wait for `FullyBooted`: the port alone opens before
    /// the dialplan and the SIP stack are loaded.
    fn wait_fully_booted(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(process) = self.process.as_mut()
                && let Some(status) = process.exited()
            {
                return Err(format!("asterisk exited: {status}"));
            }
            match self.ami_login_until_booted(deadline) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn ami_login_until_booted(&self, deadline: Instant) -> Result<(), String> {
        let err = |e: std::io::Error| e.to_string();
        let mut stream =
            TcpStream::connect_timeout(&self.ami_address(), Duration::from_millis(200))
                .map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(err)?;
        write!(
            stream,
            "Action: Login\r\nUsername: {AMI_USER}\r\nSecret: {AMI_SECRET}\r\nEvents: system\r\n\r\n"
        )
        .map_err(err)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(err)?);
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Err("ami closed the connection".into()),
                Ok(_) if line.trim_end() == "Event: FullyBooted" => {
                    let _ = stream.write_all(b"Action: Logoff\r\n\r\n");
                    let mut rest = Vec::new();
                    let _ = reader.read_to_end(&mut rest);
                    return Ok(());
                }
                Ok(_) if line.starts_with("Message: Authentication failed") => {
                    return Err("ami login refused".into());
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no FullyBooted event before the deadline".into())
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        self.stop();
    }
}
