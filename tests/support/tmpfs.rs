//! A small tmpfs for tests of a full disk (mounting needs root or
//! CAP_SYS_ADMIN): without it a test says it is skipped and passes, except
//! under `CI=true`, where it fails.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;

/// A tmpfs mounted on a fresh directory; unmounted (lazily, so a file
/// still open cannot keep it) and removed on drop, even when the test fails.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// None when this machine does not let us mount.
    pub fn mount(bytes: u64) -> Option<(Tmpfs, Arc<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let guard = Tmpfs::mount_at(dir.path(), bytes)?;
        Some((guard, Arc::new(dir)))
    }

    /// Mount on `dir` (made if missing); None when this machine does not
    /// let us.
    pub fn mount_at(dir: &Path, bytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={bytes},mode=0700");
        let mounted = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("cannot mount a tmpfs (needs root or CAP_SYS_ADMIN) and CI=true");
            }
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Fill the file system of `dir` to the last byte with the file `name`;
/// returns it.
pub fn fill(dir: &Path, name: &str) -> (PathBuf, std::fs::File) {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0x55u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    (path, file)
}
