// SPDX-License-Identifier: GPL-2.0

//! Per-log state files, so a restarted server serves the logs the kernel
//! still holds.
//!
//! Each live log has one file under `<state dir>/logs/`, mapped shared into
//! the server: its bitmaps *are* the mapped pages, so every request's effect
//! reaches the page cache before its reply is sent, with no system call, and
//! survives a SIGKILL of the server. The state directory lives on tmpfs
//! (`/run`), so a reboot forgets it, which is what a `core` log means (a
//! disk log's durable state is on its log device).
//!
//! Layout (native byte order, this machine only):
//!
//! ```text
//! 0     magic "dmulogd\0"
//! 8     u32 format version
//! 12    u32 lifecycle (1 constructed, 2 resumed, 3 suspended)
//! 16    u32 flags (bit 0: log device failed)
//! 20    u32 uuid length
//! 24    u64 luid
//! 32    u64 words per bitmap
//! 40    u32 constructor string length
//! 48    uuid bytes (up to 129)
//! 192   constructor string (up to 1024)
//! 4096  clean bitmap, sync bitmap (u64 words each)
//! ```
//!
//! Version 1 files (written by an older dm-ulogd) have a third bitmap, of
//! regions being recovered; it is ignored (a restart forgets recoveries).
//!
//! A file is written under a temporary name and renamed into place, so a
//! crash during a CTR never leaves a half-written file behind a valid name.
//! Its blocks are allocated before it is mapped, so a full tmpfs is a clean
//! `ENOSPC` at CTR, never a `SIGBUS` on a later store.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ulog_proto::wire::UUID_LEN;

use memmap2::MmapMut;
use rustix::fs::{fallocate, FallocateFlags};

const MAGIC: &[u8; 8] = b"dmulogd\0";
const FORMAT_VERSION: u32 = 2;
/// Version 1 had a third bitmap (recoveries), ignored when loaded.
const FORMAT_VERSION_1: u32 = 1;
const HEADER_BYTES: usize = 4096;
const OFF_VERSION: usize = 8;
const OFF_LIFECYCLE: usize = 12;
const OFF_FLAGS: usize = 16;
const OFF_UUID_LEN: usize = 20;
const OFF_LUID: usize = 24;
const OFF_WORDS: usize = 32;
const OFF_CTR_LEN: usize = 40;
const OFF_UUID: usize = 48;
const OFF_CTR: usize = 192;

/// Longest constructor string a state file holds (the kernel sends at most
/// 332 bytes).
pub const MAX_CTR_LEN: usize = 1024;

/// Number of bitmaps kept per log: clean, sync.
pub const MAPS: usize = 2;

/// What names a log: the kernel's (uuid, luid) pair and its constructor
/// string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The uuid, without NUL padding.
    pub uuid: Vec<u8>,
    /// The kernel's local id of this log instance.
    pub luid: u64,
    /// The constructor string, without its NUL.
    pub ctr: String,
}

impl Identity {
    /// The uuid as text, for messages.
    pub fn uuid_lossy(&self) -> String {
        String::from_utf8_lossy(&self.uuid).into_owned()
    }
}

/// The state directory: `<root>/logs/*.state`, plus the lock file, control
/// socket and scratch device nodes kept directly in `<root>`.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    logs: PathBuf,
}

/// A state file that could not be loaded.
#[derive(Debug)]
pub struct Unreadable {
    /// Where it is.
    pub path: PathBuf,
    /// Why it was refused.
    pub error: io::Error,
}

impl StateDir {
    /// Opens (creating, mode 0700) the state directory at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        let logs = root.join("logs");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&logs)?;
        Ok(Self {
            root: root.to_path_buf(),
            logs,
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path in the state directory for a scratch file named `name`.
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the state file of a new log with room for [`MAPS`] bitmaps of
    /// `words` words each, under a temporary name: call
    /// [`StateFile::publish`] once its bitmaps are initialised.
    pub fn create(&self, id: &Identity, words: usize) -> io::Result<StateFile> {
        if id.uuid.len() >= UUID_LEN || id.ctr.len() > MAX_CTR_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "uuid or constructor string too long",
            ));
        }
        let name = file_name(id);
        let final_path = self.logs.join(&name);
        let tmp_path = self.logs.join(format!(".tmp-{name}"));
        let _ = fs::remove_file(&tmp_path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)?;
        let len =
            file_len(words, MAPS).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut map = match map(&file, len) {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        let head = &mut map[..HEADER_BYTES];
        head[..8].copy_from_slice(MAGIC);
        put_u32(head, OFF_VERSION, FORMAT_VERSION);
        put_u32(head, OFF_LIFECYCLE, 1);
        put_u32(head, OFF_FLAGS, 0);
        put_u32(head, OFF_UUID_LEN, id.uuid.len() as u32);
        head[OFF_LUID..OFF_LUID + 8].copy_from_slice(&id.luid.to_ne_bytes());
        head[OFF_WORDS..OFF_WORDS + 8].copy_from_slice(&(words as u64).to_ne_bytes());
        put_u32(head, OFF_CTR_LEN, id.ctr.len() as u32);
        head[OFF_UUID..OFF_UUID + id.uuid.len()].copy_from_slice(&id.uuid);
        head[OFF_CTR..OFF_CTR + id.ctr.len()].copy_from_slice(id.ctr.as_bytes());
        Ok(StateFile {
            path: tmp_path,
            final_path: Some(final_path),
            map,
            words,
            identity: id.clone(),
        })
    }

    /// Loads every state file. Leftover temporary files (a crash during a
    /// CTR) are deleted; files that cannot be used are renamed `*.bad` and
    /// reported.
    pub fn load_all(&self) -> io::Result<(Vec<StateFile>, Vec<Unreadable>)> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut entries: Vec<PathBuf> = fs::read_dir(&self.logs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(".tmp-") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".state") {
                continue;
            }
            match StateFile::load(&path) {
                Ok(f) => good.push(f),
                Err(error) => {
                    let _ = fs::rename(&path, path.with_extension("bad"));
                    bad.push(Unreadable { path, error });
                }
            }
        }
        Ok((good, bad))
    }
}

/// One log's mapped state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    final_path: Option<PathBuf>,
    map: MmapMut,
    words: usize,
    identity: Identity,
}

impl StateFile {
    fn load(path: &Path) -> io::Result<Self> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let file: File = OpenOptions::new().read(true).write(true).open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(|_| invalid("too large"))?;
        if len < HEADER_BYTES {
            return Err(invalid("shorter than its header"));
        }
        let map = map(&file, len)?;
        let head = &map[..HEADER_BYTES];
        if &head[..8] != MAGIC {
            return Err(invalid("not a dm-ulogd state file"));
        }
        let maps = match get_u32(head, OFF_VERSION) {
            FORMAT_VERSION => MAPS,
            FORMAT_VERSION_1 => MAPS + 1,
            _ => return Err(invalid("written by an incompatible dm-ulogd")),
        };
        let uuid_len = get_u32(head, OFF_UUID_LEN) as usize;
        let ctr_len = get_u32(head, OFF_CTR_LEN) as usize;
        if uuid_len == 0 || uuid_len >= UUID_LEN || ctr_len > MAX_CTR_LEN {
            return Err(invalid("bad uuid or constructor length"));
        }
        let words = usize::try_from(get_u64(head, OFF_WORDS)).map_err(|_| invalid("bad size"))?;
        if file_len(words, maps) != Some(len) {
            return Err(invalid("size does not match its bitmaps"));
        }
        let ctr = std::str::from_utf8(&head[OFF_CTR..OFF_CTR + ctr_len])
            .map_err(|_| invalid("constructor string is not text"))?
            .to_string();
        let identity = Identity {
            uuid: head[OFF_UUID..OFF_UUID + uuid_len].to_vec(),
            luid: get_u64(head, OFF_LUID),
            ctr,
        };
        Ok(Self {
            path: path.to_path_buf(),
            final_path: None,
            map,
            words,
            identity,
        })
    }

    /// Gives the file its real name, once its contents are complete.
    pub fn publish(&mut self) -> io::Result<()> {
        if let Some(to) = self.final_path.take() {
            fs::rename(&self.path, &to)?;
            self.path = to;
        }
        Ok(())
    }

    /// The log this file belongs to.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Words per bitmap.
    pub fn words_per_map(&self) -> usize {
        self.words
    }

    /// The stored lifecycle value.
    pub fn lifecycle(&self) -> u32 {
        get_u32(&self.map, OFF_LIFECYCLE)
    }

    /// The stored flags.
    pub fn flags(&self) -> u32 {
        get_u32(&self.map, OFF_FLAGS)
    }

    /// Stores the lifecycle and flags.
    pub fn set_meta(&mut self, lifecycle: u32, flags: u32) {
        let head = &mut self.map[..HEADER_BYTES];
        put_u32(head, OFF_LIFECYCLE, lifecycle);
        put_u32(head, OFF_FLAGS, flags);
    }

    /// All bitmap words: [`MAPS`] bitmaps of [`Self::words_per_map`] words.
    pub fn bitmaps(&self) -> &[u64] {
        let n = self.words * MAPS;
        bytemuck::cast_slice(&self.map[HEADER_BYTES..HEADER_BYTES + 8 * n])
    }

    /// All bitmap words, writable.
    pub fn bitmaps_mut(&mut self) -> &mut [u64] {
        let n = self.words * MAPS;
        bytemuck::cast_slice_mut(&mut self.map[HEADER_BYTES..HEADER_BYTES + 8 * n])
    }

    /// Renames the file `*.bad` (kept for inspection, never loaded again).
    pub fn set_aside(self) {
        let _ = fs::rename(&self.path, self.path.with_extension("bad"));
    }

    /// Deletes the file (the log is gone).
    pub fn remove(self) -> io::Result<()> {
        fs::remove_file(&self.path)
    }
}

/// Allocates the first `len` bytes of `file` (so that stores into the
/// mapping never find a hole on a full file system) and maps them.
fn map(file: &File, len: usize) -> io::Result<MmapMut> {
    fallocate(file, FallocateFlags::empty(), 0, len as u64)?;
    // SAFETY: the file is one of this server's state files, in the state
    // directory whose lock it holds, and no other process changes or
    // truncates it while it is mapped (which is what could make the mapping
    // unsound); its first `len` bytes are allocated above.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(file)? };
    Ok(map)
}

fn file_len(words: usize, maps: usize) -> Option<usize> {
    words.checked_mul(8 * maps)?.checked_add(HEADER_BYTES)
}

/// `<luid>-<hash of uuid>-<uuid, file-name safe, shortened>.state`: unique
/// per (uuid, luid) and still recognisable by an admin.
fn file_name(id: &Identity) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &id.uuid {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let readable: String = id
        .uuid
        .iter()
        .take(64)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    format!("{:016x}-{hash:016x}-{readable}.state", id.luid)
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_ne_bytes(b)
}

fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    fn id(uuid: &str, luid: u64) -> Identity {
        Identity {
            uuid: uuid.as_bytes().to_vec(),
            luid,
            ctr: "1024 clustered-core 8".into(),
        }
    }

    #[test]
    fn create_publish_reload() {
        let tmp = TempDir::new();
        let dir = StateDir::open(tmp.path()).unwrap();
        let mut f = dir.create(&id("LVM-a/b c", 7), 3).unwrap();
        let names = || -> Vec<String> {
            fs::read_dir(tmp.path().join("logs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        };
        assert!(
            names()[0].starts_with(".tmp-"),
            "unpublished is not a .state"
        );
        f.bitmaps_mut()[4] = 0xdead;
        f.set_meta(2, 1);
        f.publish().unwrap();
        assert!(f
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("LVM-a_b_c.state"));
        drop(f);

        let (files, bad) = dir.load_all().unwrap();
        assert!(bad.is_empty());
        assert_eq!(files.len(), 1);
        let mut f = files.into_iter().next().unwrap();
        assert_eq!(f.identity(), &id("LVM-a/b c", 7));
        assert_eq!(f.words_per_map(), 3);
        assert_eq!(f.lifecycle(), 2);
        assert_eq!(f.flags(), 1);
        assert_eq!(f.bitmaps_mut().len(), 6);
        assert_eq!(f.bitmaps_mut()[4], 0xdead);
        f.remove().unwrap();
        assert!(dir.load_all().unwrap().0.is_empty());
    }

    #[test]
    fn version_1_files_load_without_their_third_bitmap() {
        let tmp = TempDir::new();
        let dir = StateDir::open(tmp.path()).unwrap();
        let mut f = dir.create(&id("u", 1), 2).unwrap();
        f.bitmaps_mut().copy_from_slice(&[1, 2, 3, 4]);
        f.publish().unwrap();
        let path = f.path().to_path_buf();
        drop(f);
        // What version 1 wrote: the same header, three bitmaps.
        let mut bytes = fs::read(&path).unwrap();
        put_u32(&mut bytes, OFF_VERSION, FORMAT_VERSION_1);
        bytes.extend_from_slice(&[0xff; 16]);
        fs::write(&path, bytes).unwrap();
        let (files, bad) = dir.load_all().unwrap();
        assert!(bad.is_empty());
        assert_eq!(files[0].bitmaps(), [1, 2, 3, 4]);
    }

    #[test]
    fn leftovers_and_garbage_are_cleaned_up() {
        let tmp = TempDir::new();
        let dir = StateDir::open(tmp.path()).unwrap();
        let f = dir.create(&id("u", 1), 1).unwrap();
        drop(f); // a crash before publish
        fs::write(tmp.path().join("logs/junk.state"), b"hello").unwrap();
        let (files, bad) = dir.load_all().unwrap();
        assert!(files.is_empty());
        assert_eq!(bad.len(), 1);
        let left: Vec<_> = fs::read_dir(tmp.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["junk.bad"]);
    }

    #[test]
    fn names_are_unique_per_uuid_and_luid() {
        assert_ne!(file_name(&id("a", 1)), file_name(&id("a", 2)));
        assert_ne!(file_name(&id("a?", 1)), file_name(&id("a!", 1)));
        assert!(file_name(&id(&"x".repeat(128), 1)).len() < 120);
    }
}
