//! A connection that serves a window `[start, start + len)` of the layer below as a whole
//! disk: every request is moved by `start` and extents are moved back and clipped (the
//! shape of nbdkit's offset and partition filters). The window is found at prepare.

use crate::ExtentList;
use nbdbox_filter_sdk::{CmdFlags, Extent, FilterConnection, Next, ReadBuf, Result, WriteBuf};
use std::cell::Cell;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub len: u64,
}

/// Finds the window on the layer below, once per connection.
pub type Locate = Box<dyn Fn(&Next) -> Result<Window>>;

pub struct Shifted {
    locate: Locate,
    window: Cell<Window>,
}

impl Shifted {
    pub fn new(locate: Locate) -> Shifted {
        Shifted {
            locate,
            window: Cell::default(),
        }
    }

    fn at(&self, offset: u64) -> u64 {
        self.window.get().start + offset
    }
}

impl FilterConnection for Shifted {
    fn prepare(&self, next: &Next) -> Result<()> {
        self.window.set((self.locate)(next)?);
        Ok(())
    }

    fn get_size(&self, _next: &Next) -> Result<u64> {
        Ok(self.window.get().len)
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

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let Window { start, len } = self.window.get();
        let below = next.extents(count, start + offset, flags)?;
        let mut list = ExtentList::new();
        list.push_below(&below, start + offset, start + len, start);
        Ok(list.into_vec())
    }
}
