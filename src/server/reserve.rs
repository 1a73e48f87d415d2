//! A little disk space held back for the store: a file of zeros in the
//! data directory, removed when a message cannot be written (disk full) so
//! that SQLite still has room to say so — the message ends `failed`, not
//! `recording` — and made again once there is room.
//!
//! Owns: the reserve file. Must not know: messages, the engine.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// Enough for a few small transactions' WAL frames (a page is 4 KiB).
pub const RESERVE_BYTES: usize = 64 * 1024;

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("space-reserve")
}

/// Make the reserve if it is missing; true if it is there afterwards.
/// Written out (not a sparse `set_len`), so the blocks are really taken.
pub fn ensure(data_dir: &Path) -> bool {
    let reserve = path(data_dir);
    if std::fs::metadata(&reserve).is_ok_and(|m| m.len() >= RESERVE_BYTES as u64) {
        return true;
    }
    let partial = data_dir.join("space-reserve.new");
    let made = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut file| {
            file.write_all(&[0u8; RESERVE_BYTES])?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, &reserve));
    match made {
        Ok(()) => true,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            debug!("no room for the space reserve yet: {e}");
            false
        }
    }
}

/// Give the reserve back to the file system; true if there was one.
pub fn release(data_dir: &Path) -> bool {
    match std::fs::remove_file(path(data_dir)) {
        Ok(()) => {
            warn!("the disk is full: the space reserve was released");
            true
        }
        Err(_) => false,
    }
}

/// Bytes an unprivileged writer may still put on the file system of
/// `dir` (`statvfs`'s `f_bavail`); None if it cannot be asked.
pub fn available(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a plain
    // C struct that statvfs fills; it is read only if the call succeeded.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // c_ulong and fsblkcnt_t vary by target
    Some(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_released_once_made_again() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure(dir.path()));
        let len = std::fs::metadata(path(dir.path())).unwrap().len();
        assert_eq!(len, RESERVE_BYTES as u64);
        assert!(ensure(dir.path()), "already there");
        assert!(release(dir.path()));
        assert!(!release(dir.path()), "released already");
        assert!(ensure(dir.path()));
        assert!(!dir.path().join("space-reserve.new").exists());
        assert!(available(dir.path()).is_some_and(|free| free > 0));
    }
}
