//! A disk whose power can be cut, for logs opened with [`till_log::Log::open_on`].
//!
//! A SIGKILL loses nothing the process wrote: the kernel's page cache still writes it out. A
//! power cut loses what was written but not synced, and not even in order: the cache writes back
//! whatever it likes, whenever it likes. [`Disk`] keeps the two apart. Reads see every write;
//! [`StorageBackend::sync_data`] makes everything written so far survive a cut. When the cut
//! comes (before the n-th call from [`Disk::cut_after`]), the image it leaves is the disk as of
//! the last sync plus each later write or length change kept or lost at random, in order; from
//! then on every call fails, as the process would be gone. [`Disk::with_image`] starts a new disk
//! from that image, as the device starting again; [`Disk::on_cut`] lets a process write it where
//! its next start finds it.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use till_log::StorageBackend;

/// A storage backend for redb whose power can be cut. Clones share the disk.
#[derive(Clone)]
pub struct Disk(Arc<Mutex<Inner>>);

/// What [`Disk::on_cut`] calls with the image.
type CutHook = Box<dyn FnOnce(&[u8]) + Send>;

struct Inner {
    /// What reads see.
    current: Vec<u8>,
    /// Writes and length changes since the last sync, in order, each with what it replaced:
    /// undone from the last to the first, they give the disk as of the last sync.
    since_sync: Vec<Change>,
    /// Calls left before the power goes, if a cut is armed.
    cut_in: Option<u64>,
    /// What the cut left, once it came.
    image: Option<Vec<u8>>,
    /// Called with the image when the cut comes.
    on_cut: Option<CutHook>,
    /// Writes and length changes fail as on a full disk (reads and syncs still work).
    full: bool,
    rng: StdRng,
}

/// A write or a length change: where, the bytes it put there, and the length and the bytes it
/// replaced (from `offset`, up to the end of the disk as it was).
struct Change {
    offset: usize,
    new: Option<Vec<u8>>,
    old_len: usize,
    old: Vec<u8>,
}

impl Change {
    /// Makes the change to `bytes`, recording what it replaces.
    fn make(bytes: &mut Vec<u8>, offset: usize, new: Option<Vec<u8>>) -> Change {
        let old_len = bytes.len();
        let end = new.as_ref().map_or(old_len, |n| offset + n.len());
        let old = bytes[offset.min(old_len)..end.min(old_len)].to_vec();
        let change = Change {
            offset,
            new,
            old_len,
            old,
        };
        change.redo(bytes);
        change
    }

    fn redo(&self, bytes: &mut Vec<u8>) {
        match &self.new {
            Some(data) => {
                let end = self.offset + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[self.offset..end].copy_from_slice(data);
            }
            None => bytes.resize(self.offset, 0),
        }
    }

    fn undo(&self, bytes: &mut Vec<u8>) {
        bytes.resize(self.old_len.max(self.offset + self.old.len()), 0);
        bytes[self.offset..self.offset + self.old.len()].copy_from_slice(&self.old);
        bytes.truncate(self.old_len);
    }
}

impl Disk {
    /// An empty disk; `seed` decides which unsynced writes a cut keeps.
    pub fn new(seed: u64) -> Disk {
        Disk::with_image(Vec::new(), seed)
    }

    /// A disk holding `image`, all of it synced: the device starting again after a cut.
    pub fn with_image(image: Vec<u8>, seed: u64) -> Disk {
        Disk(Arc::new(Mutex::new(Inner {
            current: image,
            since_sync: Vec::new(),
            cut_in: None,
            image: None,
            on_cut: None,
            full: false,
            rng: StdRng::seed_from_u64(seed),
        })))
    }

    /// Arms a cut: the power goes before the `calls`-th write, length change or sync from now
    /// (reads do not count), so it can fall anywhere inside a commit.
    pub fn cut_after(&self, calls: u64) {
        self.lock().cut_in = Some(calls.max(1));
    }

    /// Fills the disk (`true`) or frees space on it (`false`): while full, every write and
    /// length change fails with "No space left on device".
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// Cuts the power now, if it is still on.
    pub fn cut_now(&self) {
        let mut inner = self.lock();
        if inner.image.is_none() {
            inner.cut();
        }
    }

    /// Calls `hook` with the image when the cut comes, inside the call that meets it, with the
    /// disk locked (nothing else reads or writes it meanwhile): to write the image where the
    /// device will find it when it starts again.
    pub fn on_cut(&self, hook: impl FnOnce(&[u8]) + Send + 'static) {
        self.lock().on_cut = Some(Box::new(hook));
    }

    /// What the cut left, once it came.
    pub fn image(&self) -> Option<Vec<u8>> {
        self.lock().image.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn cut(&mut self) {
        let changes = std::mem::take(&mut self.since_sync);
        let mut image = std::mem::take(&mut self.current);
        for change in changes.iter().rev() {
            change.undo(&mut image);
        }
        for change in &changes {
            if self.rng.gen_bool(0.5) {
                change.redo(&mut image);
            }
        }
        if let Some(hook) = self.on_cut.take() {
            hook(&image);
        }
        self.image = Some(image);
        self.cut_in = None;
    }

    /// Fails once the power is gone; counts a call towards an armed cut.
    fn power(&mut self, counts: bool) -> io::Result<()> {
        if self.image.is_none()
            && counts
            && let Some(left) = self.cut_in.as_mut()
        {
            *left -= 1;
            if *left == 0 {
                self.cut();
            }
        }
        if self.image.is_some() {
            return Err(io::Error::other("the power was cut"));
        }
        Ok(())
    }

    /// Fails once the disk is full.
    fn space(&self) -> io::Result<()> {
        if self.full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Disk")
            .field("len", &inner.current.len())
            .field("unsynced changes", &inner.since_sync.len())
            .field("cut", &inner.image.is_some())
            .finish()
    }
}

impl StorageBackend for Disk {
    fn len(&self) -> io::Result<u64> {
        let mut inner = self.lock();
        inner.power(false)?;
        Ok(inner.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut inner = self.lock();
        inner.power(false)?;
        let start = offset as usize;
        let end = start + out.len();
        if end > inner.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {start}..{end} past the end ({})",
                    inner.current.len()
                ),
            ));
        }
        out.copy_from_slice(&inner.current[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut inner = self.lock();
        inner.power(true)?;
        inner.space()?;
        let change = Change::make(&mut inner.current, len as usize, None);
        inner.since_sync.push(change);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.power(true)?;
        inner.since_sync.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        inner.power(true)?;
        inner.space()?;
        let change = Change::make(&mut inner.current, offset as usize, Some(data.to_vec()));
        inner.since_sync.push(change);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each cut keeps what was synced, and of the later changes some, in order; every call after
    /// it fails.
    #[test]
    fn a_cut_keeps_the_synced_disk_and_some_later_changes() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64 {
            let disk = Disk::new(seed);
            disk.write(0, b"synced..").unwrap();
            disk.sync_data().unwrap();
            disk.write(2, b"AB").unwrap();
            disk.set_len(4).unwrap();
            disk.write(6, b"CD").unwrap();
            assert_eq!(disk.len().unwrap(), 8);
            let mut read = [0u8; 8];
            disk.read(0, &mut read).unwrap();
            assert_eq!(&read, b"syAB\0\0CD");
            disk.cut_after(1);
            let err = disk.write(0, b"lost").unwrap_err();
            assert_eq!(err.to_string(), "the power was cut");
            assert!(disk.len().is_err() && disk.sync_data().is_err());
            let image = disk.image().unwrap();
            // Each of the three changes kept or lost, in order.
            let allowed: [&[u8]; 8] = [
                b"synced..",
                b"syABed..",
                b"sync",
                b"syncedCD",
                b"syAB",
                b"syABedCD",
                b"sync\0\0CD",
                b"syAB\0\0CD",
            ];
            assert!(allowed.contains(&image.as_slice()), "{image:?}");
            seen.insert(image);
        }
        // A full disk refuses writes and length changes, not reads; freed, it takes them again.
        let disk = Disk::new(0);
        disk.write(0, b"kept").unwrap();
        disk.set_full(true);
        let err = disk.write(4, b"more").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(disk.set_len(10).is_err());
        let mut read = [0u8; 4];
        disk.read(0, &mut read).unwrap();
        assert_eq!(&read, b"kept");
        disk.set_full(false);
        disk.write(4, b"more").unwrap();
        assert_eq!(disk.len().unwrap(), 8);
        // Also the two ends: nothing kept, everything kept.
        assert!(seen.contains(b"synced..".as_slice()));
        assert!(seen.contains(b"syAB\0\0CD".as_slice()));
    }
}
