//! Capability grants: the files and directories named by config keys of kind `file` and
//! `directory`. The host opens exactly those paths at configuration time (read-only under -r)
//! and a component reaches them only as `grants.file` / `grants.directory` resources, and
//! only for keys its own layer declares.
//!
//! Unlike a WASI preopen this exposes no sibling of a granted file. A directory is held open
//! from configuration time and names are resolved beneath it with openat2(2)
//! RESOLVE_BENEATH: no `..`, no absolute path, no symbolic link that leads out of it. Every
//! open is non-blocking and checks the type on the opened descriptor, so a FIFO or device
//! node cannot stall a host thread or serve as a disk.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// One granted path, opened at configuration time.
pub enum Grant {
    File {
        file: Arc<File>,
        writable: bool,
    },
    Directory {
        dir: Arc<OwnedFd>,
        writable: bool,
    },
    /// A path the component may only test for existence.
    Trigger(std::path::PathBuf),
    /// An origin or endpoint the component may reach.
    Net(super::network::NetGrant),
}

/// Everything granted for one export, by config key.
#[derive(Default)]
pub struct Grants(HashMap<String, Grant>);

impl Grants {
    pub fn insert(&mut self, key: &str, grant: Grant) {
        self.0.insert(key.to_owned(), grant);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Grant> {
        self.0.get(key)
    }

    /// Cut every network request in flight: the server is shutting down.
    pub fn cut_network(&self) {
        for grant in self.0.values() {
            if let Grant::Net(super::network::NetGrant::Url(url)) = grant {
                url.shut_down();
            }
        }
    }
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

const IS_A_DIRECTORY: &str = "is a directory (use dir= to serve the files in it)";

/// A disk must be a regular file or a block device; checked on the opened descriptor.
fn check_disk(file: &File) -> io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_dir() {
        return Err(invalid(IS_A_DIRECTORY));
    }
    if !kind.is_file() && !kind.is_block_device() {
        return Err(invalid("not a regular file or block device"));
    }
    Ok(())
}

/// Writable unless `readonly`, falling back to read-only when the file cannot be written
/// (as nbdkit ≥1.22's file plugin does). `open` takes the write mode.
fn open_writable_or_not(readonly: bool, open: impl Fn(bool) -> io::Result<File>) -> io::Result<(File, bool)> {
    if readonly {
        return Ok((open(false)?, false));
    }
    match open(true) {
        Ok(file) => Ok((file, true)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM)) => {
            Ok((open(false)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Open `path` for a file grant.
pub fn open_file(path: &Path, readonly: bool) -> io::Result<Grant> {
    let (file, writable) = open_writable_or_not(readonly, |write| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
    })
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EISDIR) => invalid(IS_A_DIRECTORY),
        _ => e,
    })?;
    check_disk(&file)?;
    blocking(&file)?;
    Ok(Grant::File {
        file: Arc::new(file),
        writable,
    })
}

/// Open `path` for an output-file grant: created (0644) if missing, opened for appending;
/// `-r` does not apply (it is not the disk).
pub fn open_output(path: &Path) -> io::Result<Grant> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(invalid("not a regular file"));
    }
    blocking(&file)?;
    Ok(Grant::File {
        file: Arc::new(file),
        writable: true,
    })
}

/// A new file for a component's own data, in $TMPDIR (default /var/tmp, as nbdkit), with
/// no name: it is gone with its last descriptor however the process exits.
pub fn scratch_file() -> io::Result<File> {
    let dir = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/var/tmp".into());
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("making a scratch file in {}: {e}", dir.display())))
}

/// A trigger-file grant: the path, made absolute now (the daemon's working directory is `/`).
pub fn trigger(path: &Path) -> io::Result<Grant> {
    Ok(Grant::Trigger(std::path::absolute(path)?))
}

/// Open `path` for a directory grant.
pub fn open_directory(path: &Path, readonly: bool) -> io::Result<Grant> {
    let dir = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir) };
    Ok(Grant::Directory {
        dir: Arc::new(dir),
        writable: !readonly,
    })
}

/// Opened non-blocking so that a FIFO cannot stall the open; data I/O blocks as usual.
fn blocking(file: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let flags = OFlag::from_bits_truncate(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A directory entry name: one path component, not `.` or `..`.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// openat2(2) beneath `dir`, refusing anything that resolves outside it.
fn open_beneath_raw(dir: &OwnedFd, name: &str, flags: OFlag) -> io::Result<OwnedFd> {
    if !plain_name(name) {
        return Err(invalid("not a plain file name in the directory"));
    }
    // openat2 refuses O_PATH with flags that only matter for a real open.
    let extra = if flags.contains(OFlag::O_PATH) {
        OFlag::O_CLOEXEC
    } else {
        OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
    };
    let how = OpenHow::new()
        .flags(flags | extra)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), name, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Open entry `name` of a granted directory as a disk.
pub fn open_beneath(dir: &OwnedFd, name: &str, writable: bool) -> io::Result<(File, bool)> {
    let (file, writable) = open_writable_or_not(!writable, |write| {
        let mode = if write { OFlag::O_RDWR } else { OFlag::O_RDONLY };
        open_beneath_raw(dir, name, mode).map(File::from)
    })?;
    check_disk(&file)?;
    blocking(&file)?;
    Ok((file, writable))
}

/// The entries of a granted directory that open beneath it as disks, in the directory's
/// own order (as nbdkit's file plugin lists them).
pub fn list(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let mut entries = nix::dir::Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in entries.iter() {
        let Ok(name) = entry?.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // O_PATH opens nothing: safe on FIFOs and devices, and follows only links that stay
        // beneath the directory.
        let is_disk = open_beneath_raw(dir, &name, OFlag::O_PATH)
            .and_then(|fd| Ok(File::from(fd).metadata()?.file_type()))
            .is_ok_and(|kind| kind.is_file() || kind.is_block_device());
        if is_disk {
            names.push(name);
        }
    }
    Ok(names)
}
