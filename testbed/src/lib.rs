//! A throwaway Asterisk or FreeSWITCH with real SIP phones (baresip), for
//! the integration tests, the demo and the benchmarks. `ivm serve` never
//! uses it.
//!
//! Owns: provisioning the cached Debian sid root filesystem, running an
//! isolated Asterisk per use (own directory, own loopback ports) and baresip
//! phones, and tearing all of it down on drop, even when a test fails.
//! Must not know: the session engine or the store.

mod asterisk;
pub mod bench;
pub mod freeswitch;
mod phone;
pub mod presence_bench;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use asterisk::{AGI_SECRET, AMI_SECRET, AMI_USER, Asterisk, AsteriskOptions};
pub use freeswitch::{Freeswitch, FreeswitchOptions};
pub use phone::{Phone, PhoneEvent, write_wav};

/// A switch the phones register to.
pub trait SipServer {
    /// The rootfs whose baresip the phones run.
    fn rootfs(&self) -> &Path;
    /// The switch's SIP port on 127.0.0.1.
    fn sip_port(&self) -> u16;
    /// The SIP password of a phone's extension.
    fn sip_password(&self, extension: &str) -> String;
}

impl SipServer for Asterisk {
    fn rootfs(&self) -> &Path {
        Asterisk::rootfs(self)
    }
    fn sip_port(&self) -> u16 {
        Asterisk::sip_port(self)
    }
    fn sip_password(&self, extension: &str) -> String {
        format!("pw{extension}")
    }
}

impl SipServer for Freeswitch {
    fn rootfs(&self) -> &Path {
        Freeswitch::rootfs(self)
    }
    fn sip_port(&self) -> u16 {
        Freeswitch::sip_port(self)
    }
    fn sip_password(&self, _extension: &str) -> String {
        Freeswitch::sip_password(self).to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("cannot provision the Asterisk root filesystem: {0}")]
    Provision(String),
    #[error("asterisk did not become ready: {0}")]
    NotReady(String),
    #[error("phone {0}: {1}")]
    Phone(String, String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

const PROVISION_SCRIPT: &str = include_str!("../../tests/asterisk/provision.sh");

static ROOTFS: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The cached rootfs with Asterisk 22 and baresip, built on first use (about a
/// minute, needs root and the Debian mirror); safe across parallel processes.
pub fn rootfs() -> Result<PathBuf, TestbedError> {
    ROOTFS
        .get_or_init(|| {
            let out = Command::new("bash")
                .arg("-c")
                .arg(PROVISION_SCRIPT)
                .arg("provision.sh")
                .output()
                .map_err(|e| format!("cannot run bash: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            }
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if path.is_empty() {
                return Err("provision.sh printed no path".into());
            }
            Ok(PathBuf::from(path))
        })
        .clone()
        .map_err(TestbedError::Provision)
}

/// Run a program of the rootfs through the rootfs's own dynamic loader: it
/// needs a newer libc than the host's, and no chroot is needed this way.
pub(crate) fn rootfs_command(rootfs: &Path, program: &str) -> Command {
    let libs = format!(
        "{0}/usr/lib/x86_64-linux-gnu:{0}/lib/x86_64-linux-gnu",
        rootfs.display()
    );
    let mut cmd = Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"));
    cmd.arg("--library-path")
        .arg(libs)
        .arg(rootfs.join(program));
    cmd
}

/// Ports handed out for a service to bind later. They come from 31000-32767:
/// above the RTP ranges of Asterisk (up to 31000) and baresip, and below
/// Linux's ephemeral range (32768 up), which outgoing connections draw from.
/// A port taken from the ephemeral range with `bind(0)` was seen handed to
/// an outgoing connection before the service bound it.
const PORT_RANGE: std::ops::Range<u32> = 31_000..32_768;

static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn pick_port(bindable: impl Fn(u16) -> bool) -> Result<u16, TestbedError> {
    let span = PORT_RANGE.end - PORT_RANGE.start;
    // Processes start at different places; within one, ports are not reused.
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = PORT_RANGE.start + (seed + n.wrapping_mul(7)) % span;
        if let Ok(port) = u16::try_from(port)
            && bindable(port)
        {
            return Ok(port);
        }
    }
    Err(TestbedError::Io(std::io::Error::other(
        "no free loopback port in 31000-32767",
    )))
}

/// A free loopback TCP port for a service to bind.
pub fn free_tcp_port() -> Result<u16, TestbedError> {
    pick_port(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A free loopback UDP port for a service to bind.
pub fn free_udp_port() -> Result<u16, TestbedError> {
    pick_port(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// A child process that is stopped on drop: SIGTERM, a grace period, SIGKILL.
pub(crate) struct Supervised {
    child: std::process::Child,
    grace: std::time::Duration,
}

impl Supervised {
    pub(crate) fn spawn(mut cmd: Command, grace: std::time::Duration) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        // Its own process group, so nothing it starts outlives it.
        cmd.process_group(0);
        Ok(Self {
            child: cmd.spawn()?,
            grace,
        })
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(crate) fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a process group id we created; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + self.grace;
        while std::time::Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
