//! data: nbdkit-data-plugin(1), a disk whose content is given on the command line
//! (plugins/data/data.c and format.c): `raw=` bytes, `base64=`, or `[data=]` in nbdkit's
//! expression language (bytes, `@OFFSET`, `le32:`/`be64:`... words, strings, `*N`, `[N:M]`,
//! `( ... )`, `-> \NAME`, `$VAR`, comments). `size=` truncates or extends it. Writes go to
//! memory and are lost at exit; every connection sees the same disk (one instance serves
//! them all).
//!
//! What the sandbox changes: `<FILE` reads only a granted file, the one given as `file=FILE`
//! (the same spelling) or a name in the directory given as `dir=DIR`; `$VAR` finds command
//! line keys only (a component has no environment); `<(SCRIPT)` is refused (no shell).
//! `allocator=sparse` is the only allocator: nbdkit's sparse allocator is reproduced page for
//! page, so block status matches nbdkit's; malloc and zstd are refused.

mod eval;
mod expr;
mod sparse;

use std::cell::RefCell;
use std::rc::Rc;

use nbdbox_sdk::grants;
use nbdbox_sdk::prelude::*;
use sparse::Sparse;

/// The most bytes read from a granted file in one host call.
const FILE_CHUNK: u64 = 1 << 20;

fn einval(why: impl Into<String>) -> Error {
    error(Errno::Einval, why)
}

/// Which of the three ways of giving the content was used.
enum Source {
    Raw(String),
    Base64(String),
    Data(String),
}

#[derive(Default)]
struct Data {
    source: Option<Source>,
    size: Option<u64>,
    /// Every key that is not the plugin's own, for `$VAR` (data.c's extra params).
    params: Vec<(String, String)>,
    file: Option<String>,
    dir: bool,
    disk: Rc<RefCell<Sparse>>,
    final_size: u64,
}

impl expr::Variables for Data {
    fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl eval::Files for Data {
    fn read(&self, name: &str, skip: u64, end: Option<u64>) -> Result<Vec<u8>, String> {
        let file = if self.file.as_deref() == Some(name) {
            grants::open_file("file")
        } else if self.dir && !name.contains('/') {
            grants::open_directory("dir").and_then(|d| d.open(name, false))
        } else {
            return Err(format!(
                "<{name}: the data plugin reads only granted files: give file={name}, \
                 or dir=DIR to read names in DIR"
            ));
        }
        .map_err(|e| format!("{name}: {}", e.message.unwrap_or_else(|| format!("{:?}", e.errno))))?;
        let size = file.size().map_err(|e| format!("{name}: {e:?}"))?;
        let end = end.map_or(size, |e| e.min(size));
        let mut out = Vec::new();
        let mut at = skip;
        while at < end {
            let n = (end - at).min(FILE_CHUNK);
            out.extend(file.read(n as u32, at).map_err(|e| format!("{name}: {e:?}"))?);
            at += n;
        }
        Ok(out)
    }
}

impl Data {
    fn set_source(&mut self, source: Source) -> Result<()> {
        if self.source.is_some() {
            return Err(einval("raw|base64|data parameter must be specified exactly once"));
        }
        self.source = Some(source);
        Ok(())
    }
}

impl Plugin for Data {
    const NAME: &'static str = "data";
    const DESCRIPTION: &'static str = "A disk whose content is given on the command line";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("data");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "data",
            Kind::Text,
            "[data=]...  Specify disk data using special format.",
        ),
        Key::new("raw", Kind::Text, "raw=...  Specify raw disk data."),
        Key::new(
            "base64",
            Kind::Text,
            "base64=...  Specify base64 disk data on the command line.",
        ),
        Key::new("size", Kind::Size, "size=<SIZE>  Size of the backing disk."),
        Key::new(
            "allocator",
            Kind::Text,
            "allocator=sparse  Backend allocation strategy (only sparse).",
        ),
        Key::new("file", Kind::InputFile, "file=FILE  The file <FILE may read."),
        Key::new(
            "dir",
            Kind::InputDirectory,
            "dir=DIR  A directory whose files <NAME may read.",
        ),
    ];
    const ACCEPTS_OTHER_KEYS: bool = true;
    const SHARED_STATE: bool = true;
    type Connection = DataDisk;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "data" => self.set_source(Source::Data(value.into()))?,
            "raw" => self.set_source(Source::Raw(value.into()))?,
            "base64" => self.set_source(Source::Base64(value.into()))?,
            "size" => self.size = Some(nbdbox_sdk::parse_size(key, value)?),
            "allocator" if value == "sparse" => {}
            "allocator" => {
                return Err(einval(format!(
                    "allocator={value} is not supported: nbdbox's data plugin has the sparse allocator only"
                )))
            }
            _ => {
                // file= and dir= are grants, and like any other key a $VAR too, as in nbdkit.
                match key {
                    "file" => self.file = Some(value.into()),
                    "dir" => self.dir = true,
                    _ => {}
                }
                self.params.push((key.into(), value.into()));
            }
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        match self.source {
            None => Err(einval("raw|base64|data parameter was not specified")),
            Some(Source::Data(_)) => Ok(()),
            Some(_) if self.params.iter().any(|(k, _)| k != "file" && k != "dir") => {
                Err(einval("extra parameters passed and not using data='...'"))
            }
            Some(_) => Ok(()),
        }
    }

    /// data.c's get_ready: the content is made once, when the server gets ready.
    fn get_ready(&mut self) -> Result<()> {
        let mut disk = Sparse::default();
        let data_size = match &self.source {
            Some(Source::Raw(raw)) => {
                disk.write(raw.as_bytes(), 0);
                raw.len() as u64
            }
            Some(Source::Base64(text)) => {
                let bytes = nbdkit_parse::base64_decode(text).map_err(einval)?;
                disk.write(&bytes, 0);
                bytes.len() as u64
            }
            Some(Source::Data(text)) => {
                let root = expr::optimize(expr::parse(text, self).map_err(einval)?);
                eval::evaluate(&root, &mut disk, self).map_err(einval)?
            }
            None => 0,
        };
        nbdbox_sdk::debug(&format!("implicit data size: {data_size}"));
        self.final_size = self.size.unwrap_or(data_size);
        self.disk = Rc::new(RefCell::new(disk));
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<DataDisk> {
        Ok(DataDisk {
            size: self.final_size,
            disk: Rc::clone(&self.disk),
        })
    }
}

struct DataDisk {
    size: u64,
    disk: Rc<RefCell<Sparse>>,
}

#[nbdbox_sdk::connection]
impl Connection for DataDisk {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    /// data.c: in memory, so flush and FUA are free, fast zero is native, and every
    /// connection sees the same disk.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_fast_zero: true,
            can_fua: FuaMode::Native,
            can_multi_conn: true,
            can_cache: CacheMode::Native,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let mut buf = vec![0; count as usize];
        self.disk.borrow().read(&mut buf, offset);
        dst.write(0, &buf);
        Ok(())
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.disk.borrow_mut().write(&src.read(0, count), offset);
        Ok(())
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.disk.borrow_mut().zero(count, offset);
        Ok(())
    }

    fn zero(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.disk.borrow_mut().zero(count, offset);
        Ok(())
    }

    fn extents(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<Vec<Extent>> {
        Ok(self
            .disk
            .borrow()
            .extents(count, offset)
            .into_iter()
            .map(|(offset, length, hole, zero)| Extent {
                offset,
                length,
                flags: match (hole, zero) {
                    (true, _) => ExtentFlags::HOLE | ExtentFlags::ZERO,
                    (false, true) => ExtentFlags::ZERO,
                    (false, false) => ExtentFlags::empty(),
                },
            })
            .collect())
    }
}

nbdbox_sdk::plugin!(Data);
