//! A real, small file system for the tests of a full disk: a size-limited tmpfs mounted on a
//! fresh temporary directory (`mount -t tmpfs -o size=N`; needs root, which CI has). Writes past
//! its size fail with the kernel's own "No space left on device", and `statvfs` reports what is
//! left, so the code under test meets a full disk exactly as it would on a device.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs of a fixed size; unmounted (and its directory removed) on drop.
pub struct SmallDisk {
    dir: Option<tempfile::TempDir>,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` on a new temporary directory. Without one a test of a full disk
    /// cannot run: in CI (`CI=true`, where it runs as root) that fails the test, naming what the
    /// system said; elsewhere it says loudly that the test is skipped, and gives `None`.
    pub fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("a temporary directory for the small disk");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700")])
            .arg("till-small-disk")
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let filler = dir.path().join("filler");
                Some(SmallDisk {
                    dir: Some(dir),
                    filler,
                })
            }
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "a full-disk test needs to mount a tmpfs (CI runs it as root): {why}"
                );
                eprintln!(
                    "\n*** SKIPPED: a full-disk test could not mount a tmpfs ({why}); run it as root ***\n"
                );
                None
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted").path()
    }

    /// Bytes still free on it.
    pub fn free(&self) -> u64 {
        till_engine::disk::free_bytes(&self.path().join("x")).expect("statvfs of the small disk")
    }

    /// Grows a filler file until at most `leave` bytes are free (the filler takes the rest, in
    /// whole pages); with 0, until the kernel says the disk is full.
    pub fn fill_to(&self, leave: u64) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("opening the filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            let free = self.free();
            if free <= leave {
                return;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            match file.write_all(&chunk[..n.max(1)]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return, // ENOSPC: full
                Err(e) => panic!("filling the small disk: {e}"),
            }
        }
    }

    /// Removes the filler: the space it took is free again.
    pub fn free_filler(&self) {
        match std::fs::remove_file(&self.filler) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the filler: {e}"),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let status = Command::new("umount").arg(dir.path()).status();
            if !status.is_ok_and(|s| s.success()) {
                // Something still holds it open: detach it now, it goes when released.
                let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
            }
            drop(dir);
        }
    }
}
