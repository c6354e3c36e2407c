//! The `grants` interface: the files and directories opened for this layer's own config keys,
//! offering what nbdkit's file plugin needs and WASI lacks: positioned I/O straight into and
//! out of request buffers, fdatasync, hole punching, zero ranges, SEEK_DATA/SEEK_HOLE, fadvise.

use super::buffers::{read_target, write_source};
use super::ImportError;
use crate::api::{self, ConfigKind, Errno};
use crate::protocol::consts::MAX_REQUEST_SIZE;
use crate::runtime::bindings::nbdbox::plugin::grants::{Advice, Host, HostDirectory, HostFile};
use crate::runtime::grants::{self, Grant};
use crate::runtime::resources::{GrantedDirectory, GrantedFile, ReadBuf, WriteBuf};
use crate::runtime::state::StoreData;
use nix::fcntl::{FallocateFlags, PosixFadviseAdvice};
use nix::unistd::Whence;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::sync::Arc;
use wasmtime::component::Resource;

type Answer<T> = Result<T, ImportError>;

/// An I/O failure as the component sees it: the errno it maps to, and the message.
fn io_error(e: io::Error) -> ImportError {
    let errno = match e.raw_os_error() {
        Some(libc::EPERM) => Errno::Perm,
        Some(libc::EROFS) => Errno::RoFs,
        Some(libc::ENOSPC | libc::EDQUOT) => Errno::NoSpc,
        Some(libc::EFBIG) => Errno::FBig,
        Some(libc::ENOMEM) => Errno::NoMem,
        Some(libc::EINVAL) => Errno::Inval,
        Some(libc::EACCES) => Errno::Acces,
        Some(libc::ENOENT) => Errno::NoEnt,
        Some(libc::EOPNOTSUPP | libc::ENODEV) => Errno::NotSup,
        _ => Errno::Io,
    };
    api::Error::new(errno, e.to_string()).into()
}

fn errno_error(e: nix::errno::Errno) -> ImportError {
    io_error(io::Error::from(e))
}

fn refused(errno: Errno, message: String) -> ImportError {
    api::Error::new(errno, message).into()
}

impl StoreData {
    fn granted(&self, file: &Resource<GrantedFile>) -> Answer<Arc<File>> {
        Ok(self.table.get(file)?.file.clone())
    }

    fn writable(&self, file: &Resource<GrantedFile>) -> Answer<Arc<File>> {
        let granted = self.table.get(file)?;
        if !granted.writable {
            return Err(refused(Errno::RoFs, "the file was granted read-only".into()));
        }
        Ok(granted.file.clone())
    }
}

impl Host for StoreData {
    fn open_file(&mut self, key: String) -> Answer<Resource<GrantedFile>> {
        let kinds = [ConfigKind::File, ConfigKind::InputFile, ConfigKind::OutputFile];
        let Some(Grant::File { file, writable }) = self.env.grant(&key, &kinds) else {
            return Err(refused(Errno::Acces, format!("no file was granted for key '{key}'")));
        };
        let granted = GrantedFile {
            file: file.clone(),
            writable: *writable,
        };
        Ok(self.table.push(granted)?)
    }

    fn open_directory(&mut self, key: String) -> Answer<Resource<GrantedDirectory>> {
        let Some(Grant::Directory { dir, writable }) = self
            .env
            .grant(&key, &[ConfigKind::Directory, ConfigKind::InputDirectory])
        else {
            return Err(refused(
                Errno::Acces,
                format!("no directory was granted for key '{key}'"),
            ));
        };
        let granted = GrantedDirectory {
            dir: dir.clone(),
            writable: *writable,
        };
        Ok(self.table.push(granted)?)
    }

    fn exists(&mut self, key: String) -> Answer<bool> {
        let Some(Grant::Trigger(path)) = self.env.grant(&key, &[ConfigKind::TriggerFile]) else {
            return Err(refused(
                Errno::Acces,
                format!("no trigger file was granted for key '{key}'"),
            ));
        };
        Ok(std::fs::symlink_metadata(path).is_ok())
    }

    fn scratch_file(&mut self) -> Answer<Resource<GrantedFile>> {
        let file = grants::scratch_file().map_err(io_error)?;
        Ok(self.table.push(GrantedFile {
            file: Arc::new(file),
            writable: true,
        })?)
    }
}

impl HostFile for StoreData {
    fn is_writable(&mut self, file: Resource<GrantedFile>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&file)?.writable)
    }

    fn size(&mut self, file: Resource<GrantedFile>) -> Answer<u64> {
        let f = self.granted(&file)?;
        let metadata = f.metadata().map_err(io_error)?;
        if metadata.file_type().is_block_device() {
            // A block device's size is where its end is.
            let end = nix::unistd::lseek(f.as_raw_fd(), 0, Whence::SeekEnd).map_err(errno_error)?;
            return Ok(end as u64);
        }
        Ok(metadata.len())
    }

    fn read_into(
        &mut self,
        file: Resource<GrantedFile>,
        dst: Resource<ReadBuf>,
        at: u32,
        count: u32,
        offset: u64,
    ) -> Answer<()> {
        let f = self.granted(&file)?;
        let raw = read_target(self, &dst)?;
        // SAFETY: a view of a buffer lent to this call or owned by this instance's table.
        let buf = unsafe { raw.slice_mut(at, count as usize)? };
        if crate::runtime::spliced::defer(&f, buf, offset) {
            return Ok(());
        }
        f.read_exact_at(buf, offset).map_err(io_error)
    }

    fn write_from(
        &mut self,
        file: Resource<GrantedFile>,
        src: Resource<WriteBuf>,
        at: u32,
        count: u32,
        offset: u64,
    ) -> Answer<()> {
        let f = self.writable(&file)?;
        let raw = write_source(self, &src)?;
        // SAFETY: as in `read_into`.
        let buf = unsafe { raw.slice(at, count as usize)? };
        f.write_all_at(buf, offset).map_err(io_error)
    }

    fn read(&mut self, file: Resource<GrantedFile>, count: u32, offset: u64) -> Answer<Vec<u8>> {
        if count > MAX_REQUEST_SIZE {
            return Err(refused(
                Errno::Inval,
                format!("read of {count} bytes is larger than the largest request"),
            ));
        }
        let f = self.granted(&file)?;
        let mut buf = super::buffers::allocate(count as usize)?;
        f.read_exact_at(&mut buf, offset).map_err(io_error)?;
        Ok(buf)
    }

    fn write(&mut self, file: Resource<GrantedFile>, data: Vec<u8>, offset: u64) -> Answer<()> {
        self.writable(&file)?.write_all_at(&data, offset).map_err(io_error)
    }

    fn append(&mut self, file: Resource<GrantedFile>, data: Vec<u8>) -> Answer<()> {
        use std::io::Write;
        let f = self.writable(&file)?;
        let appending = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .is_ok_and(|flags| flags & libc::O_APPEND != 0);
        if !appending {
            return Err(refused(Errno::Inval, "append is for output-file grants".into()));
        }
        // One write(2) on an O_APPEND descriptor lands whole at the end.
        (&*f).write_all(&data).map_err(io_error)
    }

    fn set_size(&mut self, file: Resource<GrantedFile>, size: u64) -> Answer<()> {
        self.writable(&file)?.set_len(size).map_err(io_error)
    }

    fn sync(&mut self, file: Resource<GrantedFile>) -> Answer<()> {
        self.granted(&file)?.sync_data().map_err(io_error)
    }

    fn punch_hole(&mut self, file: Resource<GrantedFile>, count: u64, offset: u64) -> Answer<()> {
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(&*self.writable(&file)?, mode, count, offset)
    }

    fn zero_range(&mut self, file: Resource<GrantedFile>, count: u64, offset: u64) -> Answer<()> {
        let mode = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(&*self.writable(&file)?, mode, count, offset)
    }

    fn next_data(&mut self, file: Resource<GrantedFile>, offset: u64) -> Answer<Option<u64>> {
        let f = self.granted(&file)?;
        match nix::unistd::lseek(f.as_raw_fd(), offset as i64, Whence::SeekData) {
            Ok(pos) => Ok(Some(pos as u64)),
            // ENXIO: nothing but a hole from here to the end.
            Err(nix::errno::Errno::ENXIO) => Ok(None),
            Err(e) => Err(errno_error(e)),
        }
    }

    fn next_hole(&mut self, file: Resource<GrantedFile>, offset: u64) -> Answer<u64> {
        let f = self.granted(&file)?;
        nix::unistd::lseek(f.as_raw_fd(), offset as i64, Whence::SeekHole)
            .map(|pos| pos as u64)
            .map_err(errno_error)
    }

    fn advise(&mut self, file: Resource<GrantedFile>, advice: Advice, count: u64, offset: u64) -> wasmtime::Result<()> {
        let f = self.table.get(&file)?.file.clone();
        let advice = match advice {
            Advice::Normal => PosixFadviseAdvice::POSIX_FADV_NORMAL,
            Advice::Random => PosixFadviseAdvice::POSIX_FADV_RANDOM,
            Advice::Sequential => PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
            Advice::WillNeed => PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            Advice::DontNeed => {
                crate::runtime::spliced::settle()?;
                PosixFadviseAdvice::POSIX_FADV_DONTNEED
            }
        };
        // Advisory: a failure changes nothing the component could act on.
        let _ = nix::fcntl::posix_fadvise(f.as_raw_fd(), offset as i64, count as i64, advice);
        Ok(())
    }

    fn drop(&mut self, file: Resource<GrantedFile>) -> wasmtime::Result<()> {
        self.table.delete(file)?;
        Ok(())
    }
}

fn fallocate(f: &File, mode: FallocateFlags, count: u64, offset: u64) -> Answer<()> {
    nix::fcntl::fallocate(f.as_raw_fd(), mode, offset as i64, count as i64).map_err(errno_error)
}

impl HostDirectory for StoreData {
    fn list(&mut self, dir: Resource<GrantedDirectory>) -> Answer<Vec<String>> {
        let dir = self.table.get(&dir)?.dir.clone();
        grants::list(&dir).map_err(io_error)
    }

    fn open(&mut self, dir: Resource<GrantedDirectory>, name: String, writable: bool) -> Answer<Resource<GrantedFile>> {
        let granted = self.table.get(&dir)?;
        if !grants::plain_name(&name) {
            return Err(refused(
                Errno::Inval,
                format!("'{name}' is not a plain file name in the directory"),
            ));
        }
        let (dir, writable) = (granted.dir.clone(), writable && granted.writable);
        let (file, writable) = grants::open_beneath(&dir, &name, writable).map_err(io_error)?;
        Ok(self.table.push(GrantedFile {
            file: Arc::new(file),
            writable,
        })?)
    }

    fn drop(&mut self, dir: Resource<GrantedDirectory>) -> wasmtime::Result<()> {
        self.table.delete(dir)?;
        Ok(())
    }
}
