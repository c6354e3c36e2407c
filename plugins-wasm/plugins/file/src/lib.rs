//! file: serve a file, or the files of a directory chosen by export name, as
//! nbdkit-file-plugin(1). The host opens the granted path; this component only ever sees it
//! through the `grants` interface, and data moves between the file and the request buffers
//! inside the host (read-into / write-from) without passing through the component.

use std::cell::Cell;

use nbdbox_sdk::debug;
use nbdbox_sdk::grants::{open_directory, open_file, Advice, File};
use nbdbox_sdk::prelude::*;

/// Which grant the disk comes from, remembered with the key the user spelled.
enum Mode {
    File(String),
    Dir(String),
}

/// The file a connection serves: the granted file, or `name` inside the granted directory.
fn open_export(mode: &Mode, readonly: bool, name: &str) -> Result<File> {
    match mode {
        Mode::File(key) => open_file(key),
        Mode::Dir(key) => {
            if name.is_empty() {
                return Err(error(
                    Errno::Einval,
                    format!("{key}: the default export \"\" is not served; ask for a file in the directory by name"),
                ));
            }
            if name.contains('/') {
                return Err(error(
                    Errno::Einval,
                    format!("{key}: export name '{name}' must not contain '/'"),
                ));
            }
            let dir = open_directory(key)?;
            if readonly {
                return dir.open(name, false);
            }
            // As nbdkit: a file we may not write is still served, read-only.
            match dir.open(name, true) {
                Err(e) if matches!(e.errno, Errno::Eacces | Errno::Eperm | Errno::Erofs) => dir.open(name, false),
                other => other,
            }
        }
    }
}

/// Walk SEEK_DATA / SEEK_HOLE over [offset, end): holes are (.., true), data is (.., false).
/// Extents are contiguous, start at `offset` and end at `end`; `req_one` stops after one.
fn walk_extents(
    offset: u64,
    end: u64,
    req_one: bool,
    mut next_data: impl FnMut(u64) -> Result<Option<u64>>,
    mut next_hole: impl FnMut(u64) -> Result<u64>,
) -> Result<Vec<(u64, u64, bool)>> {
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end {
        let next = match next_data(pos)? {
            // Only a hole follows.
            None => {
                out.push((pos, end - pos, true));
                end
            }
            Some(data) if data > pos => {
                let e = data.min(end);
                out.push((pos, e - pos, true));
                e
            }
            Some(_) => {
                let hole = next_hole(pos)?;
                // A hole at or before pos would be a filesystem bug: call the rest data.
                let e = if hole > pos { hole.min(end) } else { end };
                out.push((pos, e - pos, false));
                e
            }
        };
        pos = next;
        if req_one {
            break;
        }
    }
    Ok(out)
}

#[derive(Default)]
struct FilePlugin {
    mode: Option<Mode>,
    cache_none: bool,
    /// The access-pattern hint given when a file is opened; `None` is the kernel's normal.
    fadvise: Option<Advice>,
}

impl FilePlugin {
    fn mode(&self) -> Result<&Mode> {
        self.mode.as_ref().ok_or_else(|| {
            error(
                Errno::Einval,
                "you must supply either [file=]<FILENAME> or dir=<DIRNAME> parameter after the plugin name on the command line",
            )
        })
    }
}

impl Plugin for FilePlugin {
    const NAME: &'static str = "file";
    const DESCRIPTION: &'static str = "Serve a file, or the files of a directory by export name";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("file");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("file", Kind::File, "[file=]<FILENAME>  The file to serve."),
        Key::new(
            "dir",
            Kind::Directory,
            "dir=<DIRNAME>  Serve the files of this directory, chosen by export name.",
        ),
        Key::new("directory", Kind::Directory, "directory=<DIRNAME>  Same as dir=."),
        Key::new("cache", Kind::Text, "cache=default|none  Set use of the page cache."),
        Key::new(
            "fadvise",
            Kind::Text,
            "fadvise=normal|random|sequential  Access pattern hint.",
        ),
    ];
    type Connection = FileConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "cache" => {
                self.cache_none = match value {
                    "default" => false,
                    "none" => true,
                    _ => {
                        return Err(error(
                            Errno::Einval,
                            format!("cache: unknown value '{value}' (expected default or none)"),
                        ))
                    }
                }
            }
            "fadvise" => {
                self.fadvise = match value {
                    "normal" => None,
                    "random" => Some(Advice::Random),
                    "sequential" => Some(Advice::Sequential),
                    _ => {
                        return Err(error(
                            Errno::Einval,
                            format!("fadvise: unknown value '{value}' (expected normal, random or sequential)"),
                        ))
                    }
                }
            }
            // file, dir or directory: the host opens the grant, we remember which key it is.
            _ => {
                if self.mode.is_some() {
                    return Err(error(
                        Errno::Einval,
                        format!("{key}: only one of file= or dir= may be given"),
                    ));
                }
                self.mode = Some(if key == "file" {
                    Mode::File(key.into())
                } else {
                    Mode::Dir(key.into())
                });
            }
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        self.mode().map(drop)
    }

    fn get_ready(&mut self) -> Result<()> {
        // Fail at startup, not at the first connection, if the grant is missing.
        match self.mode()? {
            Mode::File(key) => open_file(key).map(drop),
            Mode::Dir(key) => open_directory(key).map(drop),
        }
    }

    fn list_exports(&self, _readonly: bool) -> Result<Vec<Export>> {
        match self.mode()? {
            Mode::File(_) => Ok(vec![Export {
                name: String::new(),
                description: None,
            }]),
            // One export per file; an empty directory lists none, as nbdkit's.
            Mode::Dir(key) => Ok(open_directory(key)?
                .list()?
                .into_iter()
                .map(|name| Export {
                    name,
                    description: None,
                })
                .collect()),
        }
    }

    fn open(&self, readonly: bool, export_name: &str) -> Result<FileConnection> {
        let file = open_export(self.mode()?, readonly, export_name)?;
        let writable = !readonly && file.is_writable();
        if let Some(advice) = self.fadvise {
            file.advise(advice, 0, 0);
        }
        Ok(FileConnection {
            file,
            writable,
            cache_none: self.cache_none,
            zero_punch: Cell::new(true),
            zero_range: Cell::new(true),
        })
    }
}

struct FileConnection {
    file: File,
    writable: bool,
    cache_none: bool,
    /// Zero methods still worth trying (each is disabled after ENOTSUP).
    zero_punch: Cell<bool>,
    zero_range: Cell<bool>,
}

impl FileConnection {
    fn fua(&self, flags: CmdFlags) -> Result<()> {
        if flags.contains(CmdFlags::FUA) {
            self.file.sync()
        } else {
            Ok(())
        }
    }

    fn evict(&self, count: u32, offset: u64) {
        if self.cache_none {
            self.file.advise(Advice::DontNeed, u64::from(count), offset);
        }
    }

    /// Try one zeroing method; Ok(true) if it worked, Ok(false) if it is unsupported
    /// (and is then never tried again on this connection).
    fn try_zero(&self, enabled: &Cell<bool>, what: &str, result: Result<()>) -> Result<bool> {
        match result {
            Ok(()) => {
                debug(&format!("zero: {what} worked"));
                Ok(true)
            }
            Err(e) if e.errno == Errno::Enotsup => {
                debug(&format!("zero: {what} is not supported, disabling it"));
                enabled.set(false);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[nbdbox_sdk::connection]
impl Connection for FileConnection {
    fn get_size(&self) -> Result<u64> {
        self.file.size()
    }

    /// FUA is a sync after the write; connections share the file (multi-conn); extents only
    /// where the filesystem answers SEEK_HOLE. A file opened read-only can do none of the
    /// writing calls.
    fn capabilities(&self) -> Result<Capabilities> {
        let capabilities = Capabilities {
            // nbdkit's file.c asks SEEK_HOLE at 0, which on tmpfs walks every page up to the
            // first hole (a full 1 GiB file: milliseconds), and every lane opening asks. A
            // SEEK_DATA at 0 tells the same (the filesystem answers it, or refuses both) and
            // stops at the first data.
            can_extents: self.file.next_data(0).is_ok(),
            can_fua: FuaMode::Native,
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
        self.file.read_into(dst, 0, count, offset)?;
        self.evict(count, offset);
        Ok(())
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.file.write_from(src, 0, count, offset)?;
        self.fua(flags)?;
        self.evict(count, offset);
        Ok(())
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        self.file.sync()
    }

    fn trim(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        // Trim is advisory: only EPERM and EIO are real failures.
        match self.file.punch_hole(count, offset) {
            Err(e) if matches!(e.errno, Errno::Eperm | Errno::Eio) => return Err(e),
            _ => {}
        }
        self.fua(flags)
    }

    fn zero(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        if flags.contains(CmdFlags::MAY_TRIM)
            && self.zero_punch.get()
            && self.try_zero(&self.zero_punch, "punch-hole", self.file.punch_hole(count, offset))?
        {
            return self.fua(flags);
        }
        if self.zero_range.get()
            && self.try_zero(&self.zero_range, "zero-range", self.file.zero_range(count, offset))?
        {
            return self.fua(flags);
        }
        // The host falls back to writing zeros.
        Err(errno(Errno::Enotsup))
    }

    fn extents(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let end = nbdbox_sdk::end_of(offset, count)?;
        let spans = walk_extents(
            offset,
            end,
            flags.contains(CmdFlags::REQ_ONE),
            |pos| self.file.next_data(pos),
            |pos| self.file.next_hole(pos),
        )?;
        Ok(spans
            .into_iter()
            .map(|(offset, length, hole)| Extent {
                offset,
                length,
                flags: if hole {
                    ExtentFlags::HOLE | ExtentFlags::ZERO
                } else {
                    ExtentFlags::empty()
                },
            })
            .collect())
    }

    fn cache(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.file.advise(Advice::WillNeed, count, offset);
        Ok(())
    }
}

nbdbox_sdk::plugin!(FilePlugin);

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `size` bytes whose data ranges are `data` (sorted, disjoint, half-open).
    fn model(
        size: u64,
        data: &[(u64, u64)],
    ) -> (
        impl Fn(u64) -> Result<Option<u64>> + '_,
        impl Fn(u64) -> Result<u64> + '_,
    ) {
        let next_data = move |pos: u64| Ok(data.iter().find(|&&(_, e)| e > pos).map(|&(s, _)| s.max(pos)));
        let next_hole = move |pos: u64| {
            Ok(data
                .iter()
                .find(|&&(s, e)| s <= pos && pos < e)
                .map_or(pos, |&(_, e)| e)
                .min(size))
        };
        (next_data, next_hole)
    }

    #[test]
    fn extents_walk() {
        let data = [(4096, 8192), (16384, 20000)];
        let (nd, nh) = model(30000, &data);
        let e = walk_extents(0, 30000, false, &nd, &nh).unwrap();
        assert_eq!(
            e,
            vec![
                (0, 4096, true),
                (4096, 4096, false),
                (8192, 8192, true),
                (16384, 3616, false),
                (20000, 10000, true)
            ]
        );
        let e = walk_extents(5000, 17000, false, &nd, &nh).unwrap();
        assert_eq!(e, vec![(5000, 3192, false), (8192, 8192, true), (16384, 616, false)]);
        let e = walk_extents(100, 30000, true, &nd, &nh).unwrap();
        assert_eq!(e, vec![(100, 3996, true)]);
        let e = walk_extents(25000, 30000, true, &nd, &nh).unwrap();
        assert_eq!(e, vec![(25000, 5000, true)]);
        let e = walk_extents(17000, 18000, true, &nd, &nh).unwrap();
        assert_eq!(e, vec![(17000, 1000, false)]);
        // A buggy next-hole cannot loop forever.
        let e = walk_extents(0, 100, false, |p| Ok(Some(p)), Ok).unwrap();
        assert_eq!(e, vec![(0, 100, false)]);
    }
}
