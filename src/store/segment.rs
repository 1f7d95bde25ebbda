//! One segment file and its memory map: creating it whole (fallocate, header, rename),
//! mapping it, prefaulting it. The only code of the store that needs `unsafe`.

#![allow(unsafe_code)] // mmap and fallocate; each block carries its SAFETY note.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Advice, MmapMut, MmapOptions, MmapRaw};

use super::format::{SegmentHeader, SEGMENT_HEADER};
use super::StoreError;

const PAGE: usize = 4096;

/// `seg-<id, 20 digits>.log`: the names sort in id order.
pub fn file_name(id: u64) -> String {
    format!("seg-{id:020}.log")
}

/// The segment id a file name stands for, if it is a segment's name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A mapped segment of the log.
pub struct Segment {
    pub id: u64,
    pub path: PathBuf,
    /// Length of the file, which is also the length of the map.
    pub size: u64,
    pub map: MmapMut,
    /// A second map of the same file for the flusher thread, which only ever msyncs it
    /// (msync flushes the file's pages whichever map dirtied them). `None` under `Never`.
    pub sync_map: Option<Arc<MmapRaw>>,
}

/// A segment older than the head: readable, or kept on disk unread because its header
/// could not be trusted (it counts in `disk_bytes` until reclaimed).
pub enum Sealed {
    Readable(Segment),
    Unreadable { id: u64, path: PathBuf, size: u64 },
}

impl Sealed {
    pub fn id(&self) -> u64 {
        match self {
            Sealed::Readable(seg) => seg.id,
            Sealed::Unreadable { id, .. } => *id,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Sealed::Readable(seg) => seg.size,
            Sealed::Unreadable { size, .. } => *size,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Sealed::Readable(seg) => &seg.path,
            Sealed::Unreadable { path, .. } => path,
        }
    }
}

impl Segment {
    /// Creates a segment file of `size` bytes, fully allocated, with its header, and maps it.
    /// The file appears under its final name only once whole (written as `.tmp`, then renamed);
    /// with `durable` the file and the directory entry are fsynced first.
    pub fn create(dir: &Path, id: u64, size: u64, durable: bool) -> Result<Segment, StoreError> {
        let path = dir.join(file_name(id));
        let tmp = dir.join(format!("{}.tmp", file_name(id)));
        let built = write_new_file(&tmp, id, size, durable);
        if built.is_err() {
            // A half-built file must not eat the disk space it holds; the error says why.
            let _ = fs::remove_file(&tmp);
        }
        let file = built?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename", &tmp, e))?;
        if durable {
            sync_dir(dir)?;
        }
        Segment::map(id, path, &file, size, durable)
    }

    /// Maps an existing segment file whole, at the length the open file has now (its header
    /// is checked by the caller). A file shorter than its header says is mapped only as far as
    /// it goes: touching a map past the end of its file is SIGBUS.
    pub fn open(id: u64, path: PathBuf) -> Result<Segment, StoreError> {
        let file = open_rw(&path)?;
        let size = file
            .metadata()
            .map_err(|e| StoreError::io("stat", &path, e))?
            .len();
        Segment::map(id, path, &file, size, false)
    }

    /// Adds the flusher's map to a segment opened without one.
    pub fn add_sync_map(&mut self) -> Result<Arc<MmapRaw>, StoreError> {
        let file = open_rw(&self.path)?;
        let raw = MmapOptions::new()
            .len(self.map.len())
            .map_raw(&file)
            .map_err(|e| StoreError::io("map", &self.path, e))?;
        let raw = Arc::new(raw);
        self.sync_map = Some(raw.clone());
        Ok(raw)
    }

    fn map(
        id: u64,
        path: PathBuf,
        file: &File,
        size: u64,
        durable: bool,
    ) -> Result<Segment, StoreError> {
        let len =
            usize::try_from(size).map_err(|_| StoreError::Config("segment too large to map"))?;
        // SAFETY: the map is shared with the file, which this log owns: the directory belongs
        // to one log in one process (documented on `Log`), nothing else writes or truncates the
        // file, and the log never changes its length while it is mapped (it is fallocated to
        // full size before mapping), so the memory behind the map stays valid and is only
        // changed through this map's `&mut` borrow.
        let map = unsafe { MmapOptions::new().len(len).map_mut(file) }
            .map_err(|e| StoreError::io("map", &path, e))?;
        let mut segment = Segment {
            id,
            path,
            size,
            map,
            sync_map: None,
        };
        if durable {
            let raw = MmapOptions::new()
                .len(len)
                .map_raw(file)
                .map_err(|e| StoreError::io("map", &segment.path, e))?;
            segment.sync_map = Some(Arc::new(raw));
        }
        Ok(segment)
    }

    /// Faults in every page from `from` to the end for writing, so that appends there never
    /// wait on a page fault. Uses `MADV_POPULATE_WRITE` and falls back to touching each page
    /// (the bytes past the head are zero, so writing a zero changes nothing).
    pub fn prefault_from(&mut self, from: usize) {
        let map = &mut self.map;
        if from >= map.len() {
            return;
        }
        if map
            .advise_range(Advice::PopulateWrite, from, map.len() - from)
            .is_ok()
        {
            return;
        }
        let first_page = from.div_ceil(PAGE) * PAGE;
        if from < first_page.min(map.len()) {
            map[from] = 0;
        }
        for at in (first_page..map.len()).step_by(PAGE) {
            map[at] = 0;
        }
        std::hint::black_box(&map[..]);
    }
}

fn open_rw(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open", path, e))
}

fn write_new_file(tmp: &Path, id: u64, size: u64, durable: bool) -> Result<File, StoreError> {
    let _ = fs::remove_file(tmp); // A leftover of a crash while creating this same segment.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| StoreError::io("create", tmp, e))?;
    let len = libc::off_t::try_from(size).map_err(|_| StoreError::Config("segment too large"))?;
    // SAFETY: plain system call on a descriptor that `file` owns and keeps open for the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        return Err(StoreError::io(
            "fallocate",
            tmp,
            std::io::Error::last_os_error(),
        ));
    }
    let header = SegmentHeader { id, size }.encode();
    file.write_all_at(&header, 0)
        .map_err(|e| StoreError::io("write header", tmp, e))?;
    debug_assert_eq!(header.len(), SEGMENT_HEADER);
    if durable {
        file.sync_all()
            .map_err(|e| StoreError::io("fsync", tmp, e))?;
    }
    Ok(file)
}

/// Makes the directory's entries (a new or renamed segment) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Free bytes for an unprivileged writer on the filesystem of `dir` (0 if unknown).
pub fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid C string and `stat` is a properly sized out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    stat.f_bavail.saturating_mul(stat.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_in_id_order_and_parse_back() {
        assert_eq!(file_name(7), "seg-00000000000000000007.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("seg-7.log"), None);
        assert_eq!(parse_file_name("seg-00000000000000000007.log.tmp"), None);
        assert_eq!(parse_file_name("seg-0000000000000000000x.log"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn created_segment_is_allocated_whole_with_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 3, 64 << 10, true).unwrap();
        seg.prefault_from(SEGMENT_HEADER);
        let meta = fs::metadata(&seg.path).unwrap();
        assert_eq!(meta.len(), 64 << 10);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 64 << 10, "segment file is sparse");
        let header = SegmentHeader::decode(&seg.map[..]).unwrap();
        assert_eq!(
            header,
            SegmentHeader {
                id: 3,
                size: 64 << 10
            }
        );
        assert!(&seg.map[..][SEGMENT_HEADER..].iter().all(|&b| b == 0));
        assert!(!dir.path().join(format!("{}.tmp", file_name(3))).exists());
    }
}
