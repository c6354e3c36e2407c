//! tar: serve one member of an uncompressed tar archive, read-write in place, as nbdkit's
//! old tar plugin (nbdkit ≤ 1.24). The archive is scanned once per instance through the
//! granted file; requests then go straight to the member's bytes. The member never changes
//! size, so the archive stays a valid tar file.

use nbdbox_sdk::grants::{open_file, Advice, File};
use nbdbox_sdk::prelude::*;
use tar_format::{find_member, Member, ScanError};

/// The archive is granted through the `tar` key; the member's name comes with `file`.
const TAR_KEY: &str = "tar";

#[derive(Default)]
struct Tar {
    tar_given: bool,
    /// The member's name inside the archive.
    member_name: Option<String>,
    /// Where the member is, once get-ready has scanned the archive.
    member: Option<Member>,
}

impl Tar {
    /// The member's name, once both required keys are given.
    fn member_name(&self) -> Result<&str> {
        if !self.tar_given {
            return Err(error(
                Errno::Einval,
                "tar: you must specify tar=<TARBALL> on the command line",
            ));
        }
        self.member_name.as_deref().ok_or_else(|| {
            error(
                Errno::Einval,
                "file: you must specify file=<PATH_IN_TAR> on the command line",
            )
        })
    }

    /// Find the member by walking the archive's headers through the grant.
    fn scan(&self) -> Result<Member> {
        let name = self.member_name()?;
        let file = open_file(TAR_KEY)?;
        let size = file.size()?;
        let member = find_member(name, size, |offset, count| file.read(count, offset)).map_err(|e| match e {
            ScanError::Read(e) => e,
            ScanError::Corrupt(why) => error(Errno::Einval, format!("{TAR_KEY}: damaged tar file {why}")),
            ScanError::Unsupported(why) => error(
                Errno::Einval,
                format!("file: cannot serve '{name}' from the tar file: {why}"),
            ),
            ScanError::NotFound => error(
                Errno::Enoent,
                format!("file: '{name}' not found in the tar file (check that the file really exists in the tarball)"),
            ),
        })?;
        nbdbox_sdk::info(&format!("'{name}' is at offset {} size {}", member.offset, member.size));
        Ok(member)
    }
}

impl Plugin for Tar {
    const NAME: &'static str = "tar";
    const DESCRIPTION: &'static str = "Serve one member of a tar file, in place";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some(TAR_KEY);
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(TAR_KEY, Kind::File, "[tar=]<TARBALL>  The tar file (required)."),
        Key::new("file", Kind::Text, "file=<PATH>  The member to serve (required)."),
    ];
    type Connection = TarConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        if key == TAR_KEY {
            self.tar_given = true;
        } else {
            self.member_name = Some(value.into());
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        self.member_name().map(drop)
    }

    /// Scan the archive once per instance, before the first client.
    fn get_ready(&mut self) -> Result<()> {
        self.member = Some(self.scan()?);
        Ok(())
    }

    fn open(&self, readonly: bool, _export_name: &str) -> Result<TarConnection> {
        let member = match self.member {
            Some(member) => member,
            None => self.scan()?,
        };
        let file = open_file(TAR_KEY)?;
        let writable = !readonly && file.is_writable();
        Ok(TarConnection { file, member, writable })
    }
}

struct TarConnection {
    file: File,
    member: Member,
    writable: bool,
}

impl TarConnection {
    /// Archive offset of the member's byte `offset` (the host keeps requests inside the member).
    fn at(&self, offset: u64) -> u64 {
        self.member.offset + offset
    }
}

#[nbdbox_sdk::connection]
impl Connection for TarConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.member.size)
    }

    /// No zero callback: the host writes zeros (and fails a fast zero at once); FUA is a
    /// flush. An archive opened read-only can do none of the writing calls.
    fn capabilities(&self) -> Result<Capabilities> {
        let capabilities = Capabilities {
            can_multi_conn: true,
            ..Capabilities::implied(Self::IMPLEMENTS)
        };
        Ok(if self.writable {
            capabilities
        } else {
            capabilities.read_only()
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.file.read_into(dst, 0, count, self.at(offset))
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.file.write_from(src, 0, count, self.at(offset))
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        self.file.sync()
    }

    fn cache(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.file.advise(Advice::WillNeed, count, self.at(offset));
        Ok(())
    }
}

nbdbox_sdk::plugin!(Tar);
