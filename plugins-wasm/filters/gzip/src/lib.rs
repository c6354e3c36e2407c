//! gzip: serve the decompressed content of a gzip file that the layer below holds (nbdkit's
//! filters/gzip/gzip.c), read-only. gzip cannot seek, so the first connection to an export
//! decompresses the whole file, through the layer below, into a host scratch file; reads
//! are served from there. Concatenated gzip members are decompressed as `gzip -d` does.
//! The decoder is flate2's pure-Rust backend (miniz_oxide).
//!
//! State: shared, one decompressed copy per export name, so the work is done once.

use filter_blocks::{BelowReader, PerExport};
use flate2::read::MultiGzDecoder;
use nbdbox_filter_sdk::grants::File;
use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{debug, grants};
use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

/// How much decompressed data is written out at a time.
const CHUNK: usize = 1 << 20;

/// The decompressed copies, by export name.
type Copies = Rc<PerExport<Copy>>;

#[derive(Default)]
struct Gzip {
    copies: Copies,
}

/// One export's decompressed content.
struct Copy {
    file: File,
    size: u64,
}

fn decompress(next: &Next) -> Result<Copy> {
    let size = next.get_size()?;
    let mut decoder = MultiGzDecoder::new(BelowReader::new(next, 0, size));
    let file = grants::scratch_file()?;
    let mut out = vec![0; CHUNK];
    let mut written = 0u64;
    loop {
        let n = decoder
            .read(&mut out)
            .map_err(|e| error(Errno::Eio, format!("gzip: cannot decompress: {e}")))?;
        if n == 0 {
            break;
        }
        file.write(&out[..n], written)?;
        written += n as u64;
    }
    debug(&format!("gzip: {size} bytes decompressed to {written}"));
    Ok(Copy { file, size: written })
}

impl Filter for Gzip {
    const NAME: &'static str = "gzip";
    const DESCRIPTION: &'static str = "nbdkit gzip filter";
    const SHARED_STATE: bool = true;
    type Connection = GzipConnection;

    fn open_next(&self, _readonly: bool, export_name: &str) -> Result<next::Connection> {
        next::Connection::open(true, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, export_name: &str) -> Result<GzipConnection> {
        Ok(GzipConnection {
            copies: self.copies.clone(),
            export_name: export_name.into(),
            copy: RefCell::new(None),
        })
    }
}

struct GzipConnection {
    copies: Copies,
    export_name: String,
    copy: RefCell<Option<Rc<Copy>>>,
}

impl GzipConnection {
    fn copy(&self) -> Result<Rc<Copy>> {
        self.copy
            .borrow()
            .clone()
            .ok_or_else(|| error(Errno::Eio, "gzip: not decompressed"))
    }
}

impl FilterConnection for GzipConnection {
    /// The first connection to an export decompresses it (nbdkit's gzip_prepare).
    fn prepare(&self, next: &Next) -> Result<()> {
        let copy = self.copies.get_or_make(&self.export_name, || decompress(next))?;
        *self.copy.borrow_mut() = Some(copy);
        Ok(())
    }

    fn get_size(&self, _next: &Next) -> Result<u64> {
        Ok(self.copy()?.size)
    }

    /// Read-only, whatever the layer below is; the content is one data extent.
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        Ok(Capabilities {
            can_extents: false,
            can_cache: CacheMode::Emulate,
            ..next.capabilities()?.read_only()
        })
    }

    fn pread(&self, _next: &Next, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.copy()?.file.read_into(dst, 0, count, offset)
    }
}

nbdbox_filter_sdk::filter!(Gzip);
