//! tar filter: serve one member of an uncompressed tar archive that the layer below holds
//! (`nbdbox file data.tar --filter=tar tar-entry=disk.img`, nbdkit's spelling). The archive's
//! headers are read through `next` at prepare; then every request is shifted by the member's
//! offset. Reads and writes stay inside the member (no resize), so the archive's structure
//! and its other members are untouched.

use nbdbox_filter_sdk::debug;
use nbdbox_filter_sdk::prelude::*;
use std::cell::Cell;
use tar_format::{find_member, Member, ScanError};

#[derive(Default)]
struct TarFilter {
    /// The member to serve (`tar-entry`).
    entry: Option<String>,
}

impl Filter for TarFilter {
    const NAME: &'static str = "tar";
    const DESCRIPTION: &'static str = "Serve one member of an uncompressed tar archive";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "tar-entry",
            Kind::Text,
            "The member to serve, as `tar tf` lists it (required)",
        ),
        Key::new(
            "tar",
            Kind::Text,
            "Accepted for nbdkit compatibility; the archive is read natively",
        ),
    ];
    type Connection = TarConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        if key == "tar" {
            debug("tar= is ignored: nbdbox reads the archive itself");
            return Ok(());
        }
        match self.entry.replace(value.into()) {
            Some(_) => Err(error(Errno::Einval, "tar-entry: given more than once")),
            None => Ok(()),
        }
    }

    fn config_complete(&mut self) -> Result<()> {
        if self.entry.is_none() {
            return Err(error(
                Errno::Einval,
                "tar: you must supply the tar-entry=<FILENAME> parameter",
            ));
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<TarConnection> {
        Ok(TarConnection {
            // config_complete made sure it is set.
            entry: self.entry.clone().unwrap_or_default(),
            member: Cell::new(Member { offset: 0, size: 0 }),
        })
    }
}

/// Read `count` bytes of the archive at `offset` from the layer below.
fn read_below(next: &Next, offset: u64, count: u32) -> Result<Vec<u8>> {
    let scratch = ReadBuf::new(count);
    next.pread(&scratch, count, offset, CmdFlags::empty())?;
    Ok(scratch.read(0, count))
}

struct TarConnection {
    entry: String,
    /// Where the member is in the archive, found at prepare.
    member: Cell<Member>,
}

impl TarConnection {
    /// The member's offset in the archive for a request at `offset`.
    fn at(&self, offset: u64) -> u64 {
        self.member.get().offset + offset
    }
}

impl FilterConnection for TarConnection {
    fn prepare(&self, next: &Next) -> Result<()> {
        let name = &self.entry;
        let archive_size = next.get_size()?;
        let member =
            find_member(name, archive_size, |offset, count| read_below(next, offset, count)).map_err(|e| match e {
                ScanError::Read(e) => e,
                ScanError::Corrupt(why) => error(Errno::Einval, format!("tar: damaged tar file {why}")),
                ScanError::Unsupported(why) => error(Errno::Einval, format!("tar: cannot serve '{name}': {why}")),
                ScanError::NotFound => error(
                    Errno::Enoent,
                    format!(
                        "tar: '{name}' not found in the tar file (check that the file really exists in the tarball)"
                    ),
                ),
            })?;
        debug(&format!("{name} is at offset {} size {}", member.offset, member.size));
        self.member.set(member);
        Ok(())
    }

    fn get_size(&self, _next: &Next) -> Result<u64> {
        Ok(self.member.get().size)
    }

    fn export_description(&self, _next: &Next) -> Option<String> {
        Some(format!("embedded {} from within tar file", self.entry))
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        next.pread(dst, count, self.at(offset), flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        next.pwrite(src, count, self.at(offset), flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        next.trim(count, self.at(offset), flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        next.zero(count, self.at(offset), flags)
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        next.cache(count, self.at(offset), flags)
    }

    /// The layer below's extents, moved back into the member's coordinates and clipped to it.
    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let member = self.member.get();
        let below = next.extents(count, self.at(offset), flags)?;
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
}

nbdbox_filter_sdk::filter!(TarFilter);
