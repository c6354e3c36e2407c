//! What a filter's `next` import reaches: the layer below it, as seen through the per-layer
//! gate. The runtime only calls these traits; `backend` implements them (validation,
//! emulation, instance placement), so requests keep travelling down and the runtime never
//! depends on the code that drives it.

use crate::api::{BlockSize, Caps, Error, ExportEntry, Extent, Flags, LayerInfo, ThreadModel};
use std::sync::Arc;

/// The layer below a filter, for the calls that are not about one connection.
pub trait Below: Send + Sync {
    fn info(&self) -> &LayerInfo;
    /// Only while the server is being configured; refused afterwards.
    fn config(&self, key: &str, value: &str) -> Result<(), Error>;
    fn config_complete(&self) -> Result<(), Error>;
    fn thread_model(&self) -> ThreadModel;
    fn preconnect(&self, readonly: bool) -> Result<(), Error>;
    fn list_exports(&self, readonly: bool) -> Result<Vec<ExportEntry>, Error>;
    fn default_export(&self, readonly: bool) -> Option<String>;
    /// nbdkit's next_open: a new context of the layer below.
    fn open(&self, readonly: bool, export_name: &str) -> Result<Arc<dyn BelowConnection>, Error>;
}

/// One open context of the layer below (nbdkit's `struct context`).
pub trait BelowConnection: Send + Sync {
    fn prepare(&self) -> Result<(), Error>;
    fn finalize(&self) -> Result<(), Error>;
    fn get_size(&self) -> Result<u64, Error>;
    fn export_description(&self) -> Option<String>;
    fn capabilities(&self) -> Result<Caps, Error>;
    fn block_size(&self) -> Result<Option<BlockSize>, Error>;
    fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<(), Error>;
    fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<(), Error>;
    fn flush(&self, flags: Flags) -> Result<(), Error>;
    fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error>;
    fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error>;
    fn extents(&self, count: u64, offset: u64, flags: Flags) -> Result<Vec<Extent>, Error>;
    fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error>;
}
