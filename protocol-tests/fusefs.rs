//! A FUSE filesystem that forgets, at a simulated power cut, everything
//! that was not fsynced; and that can be made full.
//!
//! The model (deliberately stricter than ext4, never looser):
//! - **File data and size** are durable up to the last `fsync`/`fdatasync`
//!   of that file. Writes and truncates since then live only in memory
//!   ("the page cache"); `sync_file_range` never reaches a FUSE
//!   filesystem, so it saves nothing, as on a real power cut.
//! - **Directory entries** (create, mkdir, rename, unlink, rmdir) are
//!   durable once the directory is fsynced (`fsyncdir`: all of its entries
//!   as they are then), or, for a file's *own* entries, once that file is
//!   fsynced (ext4's ordered journal commits the creation of an inode
//!   with the fsync of that inode). A file whose entry is durable but
//!   whose data was never fsynced comes back empty.
//! - Reads see the in-memory state.
//! - [`Mount::cut`] unmounts and keeps only the durable [`Image`]; a new
//!   [`Mount`] over that image is the machine after the power came back.
//!
//! The durable image is kept in memory by the test (it is the "disk"):
//! nothing but fsync ever copies into it. Pages are 4 KiB: an fsync copies
//! the pages written since the previous one.
//!
//! [`Mount::set_capacity`] makes writes that would grow the files past a
//! total size fail with `ENOSPC` (overwrites inside a file still succeed,
//! as on a real filesystem whose blocks are allocated).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    WriteFlags,
};

const PAGE: u64 = 4096;
const TTL: Duration = Duration::from_secs(60);
const ROOT: u64 = 1;

#[derive(Clone, Debug)]
enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
}

/// The durable state: what a disk holds after a power cut.
#[derive(Clone, Debug)]
pub struct Image {
    nodes: HashMap<u64, Node>,
    next: u64,
}

impl Image {
    /// An empty filesystem.
    pub fn new() -> Image {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(BTreeMap::new()));
        Image { nodes, next: ROOT + 1 }
    }
}

struct State {
    live: Image,
    durable: Image,
    /// Pages of each file written since its last fsync.
    dirty: HashMap<u64, BTreeSet<u64>>,
    /// Total bytes of the live files.
    used: u64,
}

struct Fs {
    state: Arc<Mutex<State>>,
    capacity: Arc<AtomicU64>,
}

fn attr(ino: u64, node: &Node) -> FileAttr {
    let (kind, size, perm, nlink) = match node {
        Node::File(d) => (FileType::RegularFile, d.len() as u64, 0o644, 1),
        Node::Dir(_) => (FileType::Directory, 0, 0o755, 2),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: PAGE as u32,
        flags: 0,
    }
}

impl Fs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.live.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.live.next;
        self.live.next += 1;
        let a = attr(ino, &node);
        self.live.nodes.insert(ino, node);
        self.dir(parent)?.insert(name.to_os_string(), ino);
        Ok(a)
    }

    /// Forget a live node no name points to any more.
    fn drop_node(&mut self, ino: u64) {
        let still_named = self.live.nodes.values().any(|n| matches!(n, Node::Dir(d) if d.values().any(|&i| i == ino)));
        if !still_named {
            if let Some(Node::File(d)) = self.live.nodes.remove(&ino) {
                self.used -= d.len() as u64;
            }
            self.dirty.remove(&ino);
        }
    }

    fn fsync_file(&mut self, ino: u64) {
        let Some(Node::File(live)) = self.live.nodes.get(&ino) else {
            return;
        };
        let durable = self.durable.nodes.entry(ino).or_insert_with(|| Node::File(Vec::new()));
        if let Node::File(d) = durable {
            d.resize(live.len(), 0);
            for p in self.dirty.remove(&ino).unwrap_or_default() {
                let start = (p * PAGE) as usize;
                let end = ((p + 1) * PAGE).min(live.len() as u64) as usize;
                if start < end {
                    d[start..end].copy_from_slice(&live[start..end]);
                }
            }
        }
        // Its own entries: where a live directory that is itself durable
        // names it.
        let mut own = Vec::new();
        for (&dir, n) in &self.live.nodes {
            if let Node::Dir(entries) = n {
                for (name, &i) in entries {
                    if i == ino {
                        own.push((dir, name.clone()));
                    }
                }
            }
        }
        for (dir, name) in own {
            if let Some(Node::Dir(d)) = self.durable.nodes.get_mut(&dir) {
                d.insert(name, ino);
            }
        }
        self.durable.next = self.durable.next.max(self.live.next);
    }

    fn fsync_dir(&mut self, ino: u64) {
        let Some(Node::Dir(entries)) = self.live.nodes.get(&ino) else {
            return;
        };
        let entries = entries.clone();
        for &i in entries.values() {
            if !self.durable.nodes.contains_key(&i) {
                let empty = match self.live.nodes.get(&i) {
                    Some(Node::Dir(_)) => Node::Dir(BTreeMap::new()),
                    _ => Node::File(Vec::new()),
                };
                self.durable.nodes.insert(i, empty);
            }
        }
        self.durable.nodes.insert(ino, Node::Dir(entries));
        self.durable.next = self.durable.next.max(self.live.next);
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        match s.child(parent.0, name) {
            Ok(ino) => reply.entry(&TTL, &attr(ino, &s.live.nodes[&ino]), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.lock();
        match s.live.nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let cap = self.capacity.load(Ordering::Acquire);
        let mut s = self.lock();
        let used = s.used;
        let State { live, dirty, used: u, .. } = &mut *s;
        match live.nodes.get_mut(&ino.0) {
            Some(Node::File(d)) => {
                if let Some(n) = size {
                    let old = d.len() as u64;
                    if n > old && used + (n - old) > cap {
                        return reply.error(Errno::ENOSPC);
                    }
                    // `used` counts `old` among its bytes.
                    *u = used - old + n;
                    d.resize(n as usize, 0);
                    // The size is part of what the next fsync saves.
                    dirty.entry(ino.0).or_default().insert(n / PAGE);
                }
                reply.attr(&TTL, &attr(ino.0, &Node::File(Vec::new())).with_size(d.len() as u64))
            }
            Some(n) => reply.attr(&TTL, &attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        match self.lock().add(parent.0, name, Node::Dir(BTreeMap::new())) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, _flags: i32, reply: ReplyCreate) {
        match self.lock().add(parent.0, name, Node::File(Vec::new())) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        match s.dir(parent.0).map(|d| d.remove(name)) {
            Ok(Some(ino)) => {
                s.drop_node(ino);
                reply.ok()
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let ino = match s.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match s.live.nodes.get(&ino) {
            Some(Node::Dir(d)) if d.is_empty() => {}
            Some(Node::Dir(_)) => return reply.error(Errno::ENOTEMPTY),
            _ => return reply.error(Errno::ENOTDIR),
        }
        if let Ok(d) = s.dir(parent.0) {
            d.remove(name);
        }
        s.live.nodes.remove(&ino);
        reply.ok()
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let ino = match s.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = s.dir(newparent.0) {
            return reply.error(e);
        }
        if let Ok(d) = s.dir(parent.0) {
            d.remove(name);
        }
        let replaced = s.dir(newparent.0).ok().and_then(|d| d.insert(newname.to_os_string(), ino));
        if let Some(old) = replaced.filter(|&o| o != ino) {
            s.drop_node(old);
        }
        reply.ok()
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.lock().live.nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::empty())
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        match s.live.nodes.get(&ino.0) {
            Some(Node::File(d)) => {
                let start = (offset as usize).min(d.len());
                let end = (start + size as usize).min(d.len());
                reply.data(&d[start..end])
            }
            Some(Node::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let cap = self.capacity.load(Ordering::Acquire);
        let mut s = self.lock();
        let used = s.used;
        let State { live, dirty, used: u, .. } = &mut *s;
        match live.nodes.get_mut(&ino.0) {
            Some(Node::File(d)) => {
                let end = offset + data.len() as u64;
                let grow = end.saturating_sub(d.len() as u64);
                if grow > 0 && used + grow > cap {
                    return reply.error(Errno::ENOSPC);
                }
                if grow > 0 {
                    d.resize(end as usize, 0);
                    *u = used + grow;
                }
                d[offset as usize..end as usize].copy_from_slice(data);
                let pages = dirty.entry(ino.0).or_default();
                for p in offset / PAGE..end.div_ceil(PAGE) {
                    pages.insert(p);
                }
                reply.written(data.len() as u32)
            }
            Some(Node::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok()
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut s = self.lock();
        match s.live.nodes.get(&ino.0) {
            Some(Node::File(_)) => s.fsync_file(ino.0),
            Some(Node::Dir(_)) => s.fsync_dir(ino.0),
            None => return reply.error(Errno::ENOENT),
        }
        reply.ok()
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().live.nodes.get(&ino.0) {
            Some(Node::Dir(_)) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(Node::File(_)) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let s = self.lock();
        let Some(Node::Dir(d)) = s.live.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut all: Vec<(u64, FileType, OsString)> =
            vec![(ino.0, FileType::Directory, ".".into()), (ROOT, FileType::Directory, "..".into())];
        for (name, &i) in d {
            let kind = match s.live.nodes.get(&i) {
                Some(Node::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((i, kind, name.clone()));
        }
        for (n, (i, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), n as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.lock().fsync_dir(ino.0);
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let cap = self.capacity.load(Ordering::Acquire).min(1 << 40);
        let used = self.lock().used;
        let free = cap.saturating_sub(used) / PAGE;
        reply.statfs(cap / PAGE, free, free, 1 << 20, 1 << 20, PAGE as u32, 255, PAGE as u32)
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok()
    }
}

trait WithSize {
    fn with_size(self, size: u64) -> Self;
}

impl WithSize for FileAttr {
    fn with_size(mut self, size: u64) -> FileAttr {
        self.size = size;
        self.blocks = size.div_ceil(512);
        self
    }
}

/// The test fails (never skips) without FUSE.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: this test needs FUSE (apt-get install fuse3, and a kernel or container with /dev/fuse)"
    );
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file())).unwrap_or(false);
    assert!(found, "fusermount3 is missing: apt-get install fuse3");
}

/// One mounted session of the filesystem; unmounted on drop, by its own
/// session handle.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    state: Arc<Mutex<State>>,
    capacity: Arc<AtomicU64>,
    path: PathBuf,
}

impl Mount {
    /// Mount `image` at `path` (an empty directory).
    pub fn new(path: &Path, image: Image) -> Mount {
        require_fuse();
        let state = Arc::new(Mutex::new(State {
            used: image.nodes.values().map(|n| if let Node::File(d) = n { d.len() as u64 } else { 0 }).sum(),
            live: image.clone(),
            durable: image,
            dirty: HashMap::new(),
        }));
        let capacity = Arc::new(AtomicU64::new(u64::MAX));
        let fs = Fs { state: state.clone(), capacity: capacity.clone() };
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![fuser::MountOption::FSName("mupdated-powercut".into())];
        let session = fuser::spawn_mount(fs, path, &cfg).unwrap_or_else(|e| panic!("FUSE mount at {}: {e}", path.display()));
        Mount { session: Some(session), state, capacity, path: path.to_path_buf() }
    }

    /// Past `bytes` of file data in total, growing writes get `ENOSPC`.
    pub fn set_capacity(&self, bytes: u64) {
        self.capacity.store(bytes, Ordering::Release);
    }

    /// Bytes of file data now.
    pub fn used(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).used
    }

    /// Power cut: unmount and keep only what was made durable.
    pub fn cut(mut self) -> Image {
        let image = self.state.lock().unwrap_or_else(|e| e.into_inner()).durable.clone();
        self.unmount();
        image
    }

    fn unmount(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                eprintln!("unmounting {}: {e}; trying fusermount3 -u", self.path.display());
                let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(&self.path).status();
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}
