//! tar: serve one member of an uncompressed tar archive, read-write in place, as nbdkit's
//! old tar plugin (nbdkit ≤ 1.24). The archive is scanned once per instance through the
//! granted file; requests then go straight to the member's bytes. The member never changes
//! size, so the archive stays a valid tar file.

use std::cell::RefCell;

use nbdbox_sdk::grants::{open_file, Advice, File};
use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
use nbdbox_sdk::{
    config_key, end_of, error, info, unknown_key, BlockSize, CacheMode, Capabilities, CmdFlags, ConfigKind, Errno,
    Error, Export, Extent, FuaMode, PluginInfo, ReadBuf, Result, ThreadModel, WriteBuf, ZeroMode,
};
use tar_format::{find_member, Member, ScanError};

#[derive(Default)]
struct State {
    /// The config key that granted the archive (`tar`).
    tar_key: Option<String>,
    /// The member's name inside the archive.
    member_name: Option<String>,
    /// Where the member is, once scanned.
    member: Option<Member>,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { tar_key: None, member_name: None, member: None })
    };
}

fn required() -> Result<(String, String)> {
    STATE.with_borrow(|s| {
        let tar = s
            .tar_key
            .clone()
            .ok_or_else(|| error(Errno::Einval, "tar: you must specify tar=<TARBALL> on the command line"))?;
        let name = s.member_name.clone().ok_or_else(|| {
            error(
                Errno::Einval,
                "file: you must specify file=<PATH_IN_TAR> on the command line",
            )
        })?;
        Ok((tar, name))
    })
}

/// The member's location, scanning the archive the first time.
fn member() -> Result<Member> {
    if let Some(m) = STATE.with_borrow(|s| s.member) {
        return Ok(m);
    }
    let (tar_key, name) = required()?;
    let file = open_file(&tar_key)?;
    let size = file.size()?;
    let member = find_member(&name, size, |offset, count| file.read(count, offset)).map_err(|e| match e {
        ScanError::Read(e) => e,
        ScanError::Corrupt(why) => error(Errno::Einval, format!("{tar_key}: damaged tar file {why}")),
        ScanError::Unsupported(why) => error(
            Errno::Einval,
            format!("file: cannot serve '{name}' from the tar file: {why}"),
        ),
        ScanError::NotFound => error(
            Errno::Enoent,
            format!("file: '{name}' not found in the tar file (check that the file really exists in the tarball)"),
        ),
    })?;
    info(&format!("'{name}' is at offset {} size {}", member.offset, member.size));
    STATE.with_borrow_mut(|s| s.member = Some(member));
    Ok(member)
}

struct Tar;

impl Guest for Tar {
    type Connection = TarConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "tar".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Serve one member of a tar file, in place".into(),
            magic_config_key: Some("tar".into()),
            config_keys: vec![
                config_key("tar", ConfigKind::File, "[tar=]<TARBALL>  The tar file (required)."),
                config_key("file", ConfigKind::Text, "file=<PATH>  The member to serve (required)."),
            ],
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        STATE.with_borrow_mut(|s| {
            match key.as_str() {
                "tar" => s.tar_key = Some(key),
                "file" => s.member_name = Some(value),
                _ => return Err(unknown_key(&key)),
            }
            s.member = None;
            Ok(())
        })
    }

    fn config_complete() -> Result<()> {
        required().map(drop)
    }

    fn get_ready() -> Result<()> {
        member().map(drop)
    }

    fn list_exports(_readonly: bool) -> Result<Vec<Export>> {
        Ok(Vec::new())
    }
}

struct TarConnection {
    file: File,
    member: Member,
    writable: bool,
}

impl TarConnection {
    /// Archive offset of member bytes [offset, offset + count), refusing anything outside.
    fn locate(&self, count: u32, offset: u64) -> Result<u64> {
        if end_of(offset, u64::from(count))? > self.member.size {
            return Err(error(
                Errno::Einval,
                format!("tar: request {count}@{offset} is beyond the member's end"),
            ));
        }
        end_of(self.member.offset, offset)
    }
}

fn unsupported(what: &str) -> Error {
    error(Errno::Einval, format!("tar: {what} is not supported"))
}

impl GuestConnection for TarConnection {
    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    fn finalize(&self) -> Result<()> {
        Ok(())
    }

    fn open(readonly: bool, _export_name: String) -> Result<Connection> {
        let member = member()?;
        let (tar_key, _) = required()?;
        let file = open_file(&tar_key)?;
        let writable = !readonly && file.is_writable();
        Ok(Connection::new(TarConnection { file, member, writable }))
    }

    fn get_size(&self) -> Result<u64> {
        Ok(self.member.size)
    }

    fn export_description(&self) -> Option<String> {
        None
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let w = self.writable;
        Ok(Capabilities {
            can_write: w,
            can_flush: true,
            is_rotational: false,
            can_trim: false,
            // No zero callback: the server writes zeros, and fails FAST_ZERO fast.
            can_zero: if w { ZeroMode::Emulate } else { ZeroMode::None },
            can_fast_zero: w,
            can_extents: false,
            can_fua: if w { FuaMode::Emulate } else { FuaMode::None },
            can_multi_conn: true,
            can_cache: CacheMode::Native,
        })
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(None)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let at = self.locate(count, offset)?;
        self.file.read_into(dst, 0, count, at)
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        if !self.writable {
            return Err(error(Errno::Erofs, "tar: the export is read-only"));
        }
        let at = self.locate(count, offset)?;
        self.file.write_from(src, 0, count, at)
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        self.file.sync()
    }

    fn trim(&self, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(unsupported("trim"))
    }

    fn zero(&self, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(nbdbox_sdk::errno(Errno::Enotsup))
    }

    fn extents(&self, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<Vec<Extent>> {
        Err(unsupported("extents"))
    }

    fn cache(&self, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let at = self.locate(count, offset)?;
        self.file.advise(Advice::WillNeed, u64::from(count), at);
        Ok(())
    }
}

nbdbox_sdk::export_plugin!(Tar);
