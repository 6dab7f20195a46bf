//! Free space on the device's disk. A till that runs out of it stops its node (every write to
//! the log fails; nothing acknowledged is lost), so it refuses new sales a little before: the
//! room left goes to the payments already in flight.

use std::io;
use std::path::Path;

/// The free space a node keeps for the payments in flight unless told otherwise
/// ([`crate::NodeConfig::min_free_disk`]): new sales are refused below it. A payment writes a few
/// tens of kilobytes to the log; this is room for thousands.
pub const DEFAULT_MIN_FREE_DISK: u64 = 64 * 1024 * 1024;

/// Bytes this process may still write on the file system that holds `file`.
pub fn free_bytes(file: &Path) -> io::Result<u64> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Bytes free on the disk that holds `log`, or `None` when the log is not a file (or the file
/// system cannot tell).
pub fn free_for(log: &till_log::Log) -> Option<u64> {
    free_bytes(log.path()?).ok()
}

/// `bytes` for a merchant: in MB (10^6 bytes), with one decimal below 10 MB.
pub fn megabytes(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb < 10.0 {
        format!("{mb:.1} MB")
    } else {
        format!("{mb:.0} MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_from_the_file_system_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(&dir.path().join("till.redb")).unwrap();
        assert!(free > 0, "a writable temporary directory has room");
        let missing = free_bytes(Path::new("/no/such/directory/till.redb")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn sizes_read_as_megabytes() {
        assert_eq!(megabytes(64 * 1024 * 1024), "67 MB");
        assert_eq!(megabytes(2_500_000), "2.5 MB");
        assert_eq!(megabytes(0), "0.0 MB");
    }
}
