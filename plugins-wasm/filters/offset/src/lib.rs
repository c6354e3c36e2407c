//! offset: serve `[offset, offset + range)` of the layer below (nbdkit's
//! filters/offset/offset.c). Without `range`, up to the end of the layer below. A window
//! that does not fit in the layer below fails the connection's open, as nbdkit's get_size.
//!
//! State: per connection (the window); nothing is shared.

use filter_blocks::{Shifted, Window};
use nbdbox_filter_sdk::parse_size;
use nbdbox_filter_sdk::prelude::*;

#[derive(Default, Clone, Copy)]
struct Offset {
    offset: u64,
    range: Option<u64>,
}

impl Offset {
    fn window(self, real_size: u64) -> Result<Window> {
        let len = match self.range {
            Some(range) if real_size.checked_sub(range).is_none_or(|room| self.offset > room) => {
                return Err(error(
                    Errno::Einval,
                    "offset+range is larger than the real size of the underlying file or device",
                ))
            }
            Some(range) => range,
            None if self.offset > real_size => {
                return Err(error(
                    Errno::Einval,
                    "offset is larger than the real size of the underlying file or device",
                ))
            }
            None => real_size - self.offset,
        };
        Ok(Window {
            start: self.offset,
            len,
        })
    }
}

impl Filter for Offset {
    const NAME: &'static str = "offset";
    const DESCRIPTION: &'static str = "nbdkit offset filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("offset", Kind::Size, "The start offset to serve (default 0)"),
        Key::new("range", Kind::Size, "The total size to serve (default rest of file)"),
    ];
    type Connection = Shifted;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let size = parse_size(key, value)?;
        match key {
            "offset" => self.offset = size,
            _ => self.range = Some(size),
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Shifted> {
        let settings = *self;
        Ok(Shifted::new(Box::new(move |next| settings.window(next.get_size()?))))
    }
}

nbdbox_filter_sdk::filter!(Offset);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_must_fit() {
        let o = |offset, range| Offset { offset, range };
        assert_eq!(o(10, None).window(100).unwrap(), Window { start: 10, len: 90 });
        assert_eq!(o(10, Some(90)).window(100).unwrap(), Window { start: 10, len: 90 });
        assert!(o(10, Some(91)).window(100).is_err());
        assert!(o(101, None).window(100).is_err());
        assert!(o(0, Some(101)).window(100).is_err());
        assert_eq!(o(100, None).window(100).unwrap().len, 0);
    }
}
