//! What several filters share, so that none copies it: a map of per-block states
//! ([`BlockMap`], nbdkit's common/bitmap), splitting a request into an unaligned head, an
//! aligned body and an unaligned tail ([`Split`], the read-modify-write shape of nbdkit's
//! blocksize, cow and cache filters), building extent lists that merge neighbours of the same
//! type ([`ExtentList`]), reading the layer below into component memory ([`read_below`]) and
//! a lock shared by every instance of a layer ([`CounterLock`]), blocks of the layer below kept
//! in a scratch file ([`BlockFile`]), and a connection that serves a window of the layer
//! below ([`Shifted`]); and what the overlay-like filters share: `true|false|/PATH` switches,
//! their block size answer, one value per export name ([`PerExport`]).
//!
//! The pure parts are plain Rust with native unit tests.

mod extents;
mod io;
mod lock;
mod map;
mod settings;
mod split;
mod store;
mod window;

pub use extents::{aligned, ExtentList};
pub use io::{read_below, read_below_into, write_below, BelowReader};
pub use lock::CounterLock;
pub use map::BlockMap;
pub use settings::{preferred_block_size, push_extents_below, PerExport, Switch};
pub use split::{Piece, Split};
pub use store::{BlockFile, ABSENT};
pub use window::{Locate, Shifted, Window};
