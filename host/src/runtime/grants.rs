//! Capability grants: the files and directories named by a plugin's `file`/`directory` config
//! keys. The host opens exactly those paths (read-only under -r) and the component reaches
//! them only as `grants.file` / `grants.directory` resources. Unlike a WASI preopen this
//! exposes no sibling of a granted file, and it offers what nbdkit's file plugin needs and
//! WASI lacks: positioned I/O straight into the request buffer, fdatasync, hole punching,
//! zero ranges, SEEK_DATA/SEEK_HOLE and fadvise.

use super::bindings::nbdbox::plugin::grants::{Advice, Host, HostDirectory, HostFile};
use super::bindings::{Errno, GuestError};
use super::buffers::{ReadBuf, WriteBuf};
use super::store::LayerCtx;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::Resource;
use wasmtime::Result;

/// One granted path, opened at configuration time.
pub enum Grant {
    File { file: Arc<File>, writable: bool },
    Directory { path: PathBuf, writable: bool },
}

/// Everything granted to one plugin, by config key.
#[derive(Default)]
pub struct Grants(HashMap<String, Grant>);

impl Grants {
    pub fn insert(&mut self, key: &str, grant: Grant) {
        self.0.insert(key.to_owned(), grant);
    }
}

/// Open `path` for a file grant: read-write unless `readonly`, falling
/// back to read-only when the file is not writable (as nbdkit ≥1.22 does).
pub fn open_file(path: &Path, readonly: bool) -> io::Result<(File, bool)> {
    if std::fs::metadata(path)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory (use dir= to serve the files in it)",
        ));
    }
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
    };
    let (file, writable) = if readonly {
        (open(false)?, false)
    } else {
        match open(true) {
            Ok(f) => (f, true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM)) => {
                (open(false)?, false)
            }
            Err(e) => return Err(e),
        }
    };
    let kind = file.metadata()?.file_type();
    if !kind.is_file() && !kind.is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or block device",
        ));
    }
    Ok((file, writable))
}

/// Open `path` as a directory grant.
pub fn open_directory(path: &Path, readonly: bool) -> io::Result<Grant> {
    let path = std::fs::canonicalize(path)?;
    if !path.is_dir() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory"));
    }
    Ok(Grant::Directory {
        path,
        writable: !readonly,
    })
}

/// A granted file as the guest holds it.
pub struct GrantedFile {
    file: Arc<File>,
    writable: bool,
}

/// A granted directory as the guest holds it.
pub struct GrantedDirectory {
    path: PathBuf,
    writable: bool,
}

fn guest_error(e: io::Error) -> GuestError {
    let errno = match e.raw_os_error() {
        Some(libc::EPERM) => Errno::Eperm,
        Some(libc::EROFS) => Errno::Erofs,
        Some(libc::ENOSPC | libc::EDQUOT) => Errno::Enospc,
        Some(libc::EFBIG) => Errno::Efbig,
        Some(libc::ENOMEM) => Errno::Enomem,
        Some(libc::EINVAL) => Errno::Einval,
        Some(libc::EACCES) => Errno::Eacces,
        Some(libc::ENOENT) => Errno::Enoent,
        Some(libc::EOPNOTSUPP | libc::ENODEV) => Errno::Enotsup,
        _ => Errno::Eio,
    };
    GuestError {
        errno,
        message: Some(e.to_string()),
    }
}

fn refused(errno: Errno, message: String) -> GuestError {
    GuestError {
        errno,
        message: Some(message),
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

type GuestResult<T> = Result<std::result::Result<T, GuestError>>;

impl LayerCtx {
    fn granted_file(&self, file: &Resource<GrantedFile>) -> Result<(Arc<File>, bool)> {
        let f = self.table.get(file)?;
        Ok((f.file.clone(), f.writable))
    }

    fn writable_file(&self, file: &Resource<GrantedFile>) -> Result<std::result::Result<Arc<File>, GuestError>> {
        let (f, writable) = self.granted_file(file)?;
        Ok(if writable {
            Ok(f)
        } else {
            Err(refused(Errno::Erofs, "file was granted read-only".into()))
        })
    }

    fn fallocate(&self, file: &Resource<GrantedFile>, mode: libc::c_int, count: u64, offset: u64) -> GuestResult<()> {
        let f = match self.writable_file(file)? {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let ret = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as libc::off_t, count as libc::off_t) };
        Ok(check(ret).map_err(guest_error))
    }

    fn seek(&self, file: &Resource<GrantedFile>, offset: u64, whence: libc::c_int) -> Result<io::Result<u64>> {
        let (f, _) = self.granted_file(file)?;
        let ret = unsafe { libc::lseek(f.as_raw_fd(), offset as libc::off_t, whence) };
        Ok(if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as u64)
        })
    }
}

impl Host for LayerCtx {
    fn open_file(&mut self, key: String) -> GuestResult<Resource<GrantedFile>> {
        let granted = match self.grants.0.get(&key) {
            Some(Grant::File { file, writable }) => GrantedFile {
                file: file.clone(),
                writable: *writable,
            },
            _ => {
                return Ok(Err(refused(
                    Errno::Eacces,
                    format!("no file was granted for key '{key}'"),
                )))
            }
        };
        Ok(Ok(self.table.push(granted)?))
    }

    fn open_directory(&mut self, key: String) -> GuestResult<Resource<GrantedDirectory>> {
        let granted = match self.grants.0.get(&key) {
            Some(Grant::Directory { path, writable }) => GrantedDirectory {
                path: path.clone(),
                writable: *writable,
            },
            _ => {
                return Ok(Err(refused(
                    Errno::Eacces,
                    format!("no directory was granted for key '{key}'"),
                )))
            }
        };
        Ok(Ok(self.table.push(granted)?))
    }
}

impl HostFile for LayerCtx {
    fn is_writable(&mut self, file: Resource<GrantedFile>) -> Result<bool> {
        Ok(self.granted_file(&file)?.1)
    }

    fn size(&mut self, file: Resource<GrantedFile>) -> GuestResult<u64> {
        let (f, _) = self.granted_file(&file)?;
        let size = f.metadata().and_then(|m| {
            if m.file_type().is_block_device() {
                // A block device's size is where its end is.
                let end = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
                if end < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(end as u64)
                }
            } else {
                Ok(m.len())
            }
        });
        Ok(size.map_err(guest_error))
    }

    fn read_into(
        &mut self,
        file: Resource<GrantedFile>,
        _dst: Resource<ReadBuf>,
        at: u32,
        count: u32,
        offset: u64,
    ) -> GuestResult<()> {
        let (f, _) = self.granted_file(&file)?;
        let buf = self.buffers.read_slice(at, count as usize)?;
        Ok(f.read_exact_at(buf, offset).map_err(guest_error))
    }

    fn write_from(
        &mut self,
        file: Resource<GrantedFile>,
        _src: Resource<WriteBuf>,
        at: u32,
        count: u32,
        offset: u64,
    ) -> GuestResult<()> {
        let f = match self.writable_file(&file)? {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let buf = self.buffers.write_slice(at, count as usize)?;
        Ok(f.write_all_at(buf, offset).map_err(guest_error))
    }

    fn read(&mut self, file: Resource<GrantedFile>, count: u32, offset: u64) -> GuestResult<Vec<u8>> {
        let (f, _) = self.granted_file(&file)?;
        let mut buf = vec![0; count as usize];
        Ok(f.read_exact_at(&mut buf, offset).map(|()| buf).map_err(guest_error))
    }

    fn write(&mut self, file: Resource<GrantedFile>, data: Vec<u8>, offset: u64) -> GuestResult<()> {
        Ok(match self.writable_file(&file)? {
            Ok(f) => f.write_all_at(&data, offset).map_err(guest_error),
            Err(e) => Err(e),
        })
    }

    fn sync(&mut self, file: Resource<GrantedFile>) -> GuestResult<()> {
        let (f, _) = self.granted_file(&file)?;
        Ok(f.sync_data().map_err(guest_error))
    }

    fn punch_hole(&mut self, file: Resource<GrantedFile>, count: u64, offset: u64) -> GuestResult<()> {
        self.fallocate(
            &file,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            count,
            offset,
        )
    }

    fn zero_range(&mut self, file: Resource<GrantedFile>, count: u64, offset: u64) -> GuestResult<()> {
        self.fallocate(
            &file,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            count,
            offset,
        )
    }

    fn next_data(&mut self, file: Resource<GrantedFile>, offset: u64) -> GuestResult<Option<u64>> {
        Ok(match self.seek(&file, offset, libc::SEEK_DATA)? {
            Ok(pos) => Ok(Some(pos)),
            // ENXIO: nothing but a hole from here to the end.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(e) => Err(guest_error(e)),
        })
    }

    fn next_hole(&mut self, file: Resource<GrantedFile>, offset: u64) -> GuestResult<u64> {
        Ok(self.seek(&file, offset, libc::SEEK_HOLE)?.map_err(guest_error))
    }

    fn advise(&mut self, file: Resource<GrantedFile>, advice: Advice, count: u64, offset: u64) -> Result<()> {
        let (f, _) = self.granted_file(&file)?;
        let advice = match advice {
            Advice::Normal => libc::POSIX_FADV_NORMAL,
            Advice::Random => libc::POSIX_FADV_RANDOM,
            Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
            Advice::WillNeed => libc::POSIX_FADV_WILLNEED,
            Advice::DontNeed => libc::POSIX_FADV_DONTNEED,
        };
        // Advisory: a failure changes nothing the guest could act on.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), offset as libc::off_t, count as libc::off_t, advice) };
        Ok(())
    }

    fn drop(&mut self, file: Resource<GrantedFile>) -> Result<()> {
        self.table.delete(file)?;
        Ok(())
    }
}

/// A directory entry name the guest may open: one path component, not `.` or `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

impl HostDirectory for LayerCtx {
    fn list(&mut self, dir: Resource<GrantedDirectory>) -> GuestResult<Vec<String>> {
        let path = self.table.get(&dir)?.path.clone();
        let listing = std::fs::read_dir(&path).map(|entries| {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file() || m.file_type().is_block_device()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            names
        });
        Ok(listing.map_err(guest_error))
    }

    fn open(
        &mut self,
        dir: Resource<GrantedDirectory>,
        name: String,
        writable: bool,
    ) -> GuestResult<Resource<GrantedFile>> {
        let granted = self.table.get(&dir)?;
        if !plain_name(&name) {
            return Ok(Err(refused(
                Errno::Einval,
                format!("'{name}' is not a plain file name in the directory"),
            )));
        }
        let (path, dir_writable) = (granted.path.join(&name), granted.writable);
        let opened = open_file(&path, !(writable && dir_writable)).map(|(file, writable)| GrantedFile {
            file: Arc::new(file),
            writable,
        });
        Ok(match opened {
            Ok(file) => Ok(self.table.push(file)?),
            Err(e) => Err(guest_error(e)),
        })
    }

    fn drop(&mut self, dir: Resource<GrantedDirectory>) -> Result<()> {
        self.table.delete(dir)?;
        Ok(())
    }
}
