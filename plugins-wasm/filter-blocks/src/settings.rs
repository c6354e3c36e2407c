//! Settings and answers that the overlay-like filters (cow, cache, gzip) share.

use crate::ExtentList;
use nbdbox_filter_sdk::grants;
use nbdbox_filter_sdk::{parse_bool, BlockSize, CmdFlags, Next, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A boolean that may instead be an absolute path, on while the path exists (nbdkit's
/// `cow-on-read=` and `cache-on-read=`). The key must be of kind trigger-file: the host only
/// tests whether the path exists.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub enum Switch {
    #[default]
    Off,
    On,
    WhilePathExists(&'static str),
}

impl Switch {
    /// `true`/`false` (nbdkit's booleans) or `/PATH` for config key `key`.
    pub fn parse(key: &'static str, value: &str) -> Result<Switch> {
        Ok(if value.starts_with('/') {
            Switch::WhilePathExists(key)
        } else if parse_bool(key, value)? {
            Switch::On
        } else {
            Switch::Off
        })
    }

    pub fn is_on(self) -> bool {
        match self {
            Switch::Off => false,
            Switch::On => true,
            Switch::WhilePathExists(key) => grants::exists(key).unwrap_or(false),
        }
    }
}

/// The block size a filter that works in blocks of `block` bytes advertises over the layer
/// below's (nbdkit's cow_block_size and cache_block_size): its block as the preferred size.
pub fn preferred_block_size(below: Option<BlockSize>, block: u32) -> BlockSize {
    match below {
        None => BlockSize {
            minimum: 1,
            preferred: block,
            maximum: u32::MAX,
        },
        Some(below) if below.maximum >= block => BlockSize {
            preferred: below.preferred.max(block),
            ..below
        },
        Some(below) => below,
    }
}

/// Append the layer below's extents for `[from, to)`, asking again from where a shorter
/// answer ended (only once with `REQ_ONE`).
pub fn push_extents_below(list: &mut ExtentList, next: &Next, from: u64, to: u64, flags: CmdFlags) -> Result<()> {
    let mut at = from;
    while at < to {
        let below = next.extents(to - at, at, flags)?;
        list.push_below(&below, at, to, 0);
        if list.end() <= at || flags.contains(CmdFlags::REQ_ONE) {
            break;
        }
        at = list.end();
    }
    Ok(())
}

/// One `T` per export name, made by the first connection to it and shared by the rest (a
/// filter with shared state that keeps data per export).
pub struct PerExport<T>(RefCell<HashMap<String, Rc<T>>>);

impl<T> Default for PerExport<T> {
    fn default() -> Self {
        PerExport(RefCell::default())
    }
}

impl<T> PerExport<T> {
    /// The export's `T`, made with `make` if it has none yet.
    pub fn get_or_make(&self, export_name: &str, make: impl FnOnce() -> Result<T>) -> Result<Rc<T>> {
        if let Some(existing) = self.0.borrow().get(export_name) {
            return Ok(existing.clone());
        }
        let made = Rc::new(make()?);
        self.0.borrow_mut().insert(export_name.to_owned(), made.clone());
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_the_preferred_size() {
        let b = |minimum, preferred, maximum| BlockSize {
            minimum,
            preferred,
            maximum,
        };
        let plain = |x: BlockSize| (x.minimum, x.preferred, x.maximum);
        assert_eq!(plain(preferred_block_size(None, 65536)), (1, 65536, u32::MAX));
        assert_eq!(
            plain(preferred_block_size(Some(b(512, 4096, 1 << 20)), 65536)),
            (512, 65536, 1 << 20)
        );
        assert_eq!(
            plain(preferred_block_size(Some(b(512, 4096, 32768)), 65536)),
            (512, 4096, 32768)
        );
    }

    #[test]
    fn one_per_export() {
        let map = PerExport::<u32>::default();
        let a = map.get_or_make("a", || Ok(1)).unwrap();
        let again = map.get_or_make("a", || Ok(2)).unwrap();
        let b = map.get_or_make("b", || Ok(3)).unwrap();
        assert_eq!((*a, *again, *b), (1, 1, 3));
    }
}
