//! tar filter: serve one member of an uncompressed tar archive that the layer below holds
//! (`nbdbox file data.tar --filter=tar tar-entry=disk.img`, nbdkit's spelling). The archive's
//! headers are read through `next` at prepare; then every request is shifted by the member's
//! offset. Reads and writes stay inside the member (no resize), so the archive's structure
//! and its other members are untouched.

use nbdbox_filter_sdk::filter::{Connection, Guest, GuestConnection};
use nbdbox_filter_sdk::{
    config_key, debug, error, forward, forward_globals, next, CmdFlags, ConfigKind, Errno, Extent, PluginInfo, ReadBuf,
    Result, ThreadModel, WriteBuf,
};
use std::cell::{Cell, RefCell};
use tar_format::{find_member, Member, ScanError};

thread_local! {
    static ENTRY: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct TarFilter;

struct TarConnection {
    next: next::Connection,
    member: Cell<Member>,
}

impl Guest for TarFilter {
    type Connection = TarConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "tar".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Serve one member of an uncompressed tar archive".into(),
            magic_config_key: None,
            config_keys: vec![
                config_key(
                    "tar-entry",
                    ConfigKind::Text,
                    "The member to serve, as `tar tf` lists it (required)",
                ),
                config_key(
                    "tar",
                    ConfigKind::Text,
                    "Accepted for nbdkit compatibility; the archive is read natively",
                ),
            ],
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        match key.as_str() {
            "tar-entry" => ENTRY.with(|entry| match entry.replace(Some(value)) {
                Some(_) => Err(error(Errno::Einval, "tar-entry: given more than once")),
                None => Ok(()),
            }),
            "tar" => {
                debug("tar= is ignored: nbdbox reads the archive itself");
                Ok(())
            }
            _ => next::config(&key, &value),
        }
    }

    fn config_complete() -> Result<()> {
        if ENTRY.with(|entry| entry.borrow().is_none()) {
            return Err(error(
                Errno::Einval,
                "tar: you must supply the tar-entry=<FILENAME> parameter",
            ));
        }
        next::config_complete()
    }

    forward_globals!(get_ready, list_exports);
}

/// Read `count` bytes of the archive at `offset` from the layer below.
fn read_below(next: &next::Connection, offset: u64, count: u32) -> Result<Vec<u8>> {
    let scratch = ReadBuf::new(count);
    next.pread(&scratch, count, offset, CmdFlags::empty())?;
    Ok(scratch.read(0, count))
}

impl TarConnection {
    fn next(&self) -> &next::Connection {
        &self.next
    }

    /// The member's offset in the archive for a request at `offset`.
    fn at(&self, offset: u64) -> u64 {
        self.member.get().offset + offset
    }
}

impl GuestConnection for TarConnection {
    fn open(readonly: bool, export_name: String) -> Result<Connection> {
        let next = next::Connection::open(readonly, &export_name)?;
        Ok(Connection::new(TarConnection {
            next,
            member: Cell::new(Member { offset: 0, size: 0 }),
        }))
    }

    fn prepare(&self) -> Result<()> {
        self.next.prepare()?;
        let name = ENTRY.with(|entry| entry.borrow().clone()).unwrap_or_default();
        let archive_size = self.next.get_size()?;
        let member = find_member(&name, archive_size, |offset, count| {
            read_below(&self.next, offset, count)
        })
        .map_err(|e| match e {
            ScanError::Read(e) => e,
            ScanError::Corrupt(why) => error(Errno::Einval, format!("tar: damaged tar file {why}")),
            ScanError::Unsupported(why) => error(Errno::Einval, format!("tar: cannot serve '{name}': {why}")),
            ScanError::NotFound => error(
                Errno::Enoent,
                format!("tar: '{name}' not found in the tar file (check that the file really exists in the tarball)"),
            ),
        })?;
        debug(&format!("{name} is at offset {} size {}", member.offset, member.size));
        self.member.set(member);
        Ok(())
    }

    fn get_size(&self) -> Result<u64> {
        Ok(self.member.get().size)
    }

    fn export_description(&self) -> Option<String> {
        let name = ENTRY.with(|entry| entry.borrow().clone()).unwrap_or_default();
        Some(format!("embedded {name} from within tar file"))
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.next.pread(dst, count, self.at(offset), flags)
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.next.pwrite(src, count, self.at(offset), flags)
    }

    fn trim(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.next.trim(count, self.at(offset), flags)
    }

    fn zero(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.next.zero(count, self.at(offset), flags)
    }

    fn cache(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.next.cache(count, self.at(offset), flags)
    }

    /// The layer below's extents, moved back into the member's coordinates and clipped to it.
    fn extents(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let member = self.member.get();
        let below = self.next.extents(count, self.at(offset), flags)?;
        Ok(below
            .into_iter()
            .filter_map(|e| {
                let start = e.offset.max(member.offset);
                let end = (e.offset + e.length).min(member.offset + member.size);
                (start < end).then(|| Extent {
                    offset: start - member.offset,
                    length: end - start,
                    flags: e.flags,
                })
            })
            .collect())
    }

    forward!(next; finalize, capabilities, block_size, flush);
}

nbdbox_filter_sdk::export_filter!(TarFilter);
