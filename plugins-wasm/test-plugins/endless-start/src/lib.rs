//! endless-start (test only): a plugin whose start code never ends. A static constructor, as
//! C++ or a language runtime would have, runs before the first call into the component
//! (`describe`), and spins: the host must cut it off by the call deadline even before it
//! knows the component's name, in `--dump-plugin` and `--help` as when serving.

use std::hint::black_box;

use nbdbox_sdk::prelude::*;

extern "C" fn spin_forever() {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Run by the component's constructors (`__wasm_call_ctors`), before any export.
#[used]
#[link_section = ".init_array"]
static START: extern "C" fn() = spin_forever;

#[derive(Default)]
struct EndlessStart;

impl Plugin for EndlessStart {
    const NAME: &'static str = "endless-start";
    type Connection = Never;

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<Never> {
        Err(error(Errno::Eio, "never reached"))
    }
}

/// A connection that cannot be made.
enum Never {}

#[nbdbox_sdk::connection]
impl Connection for Never {
    fn get_size(&self) -> Result<u64> {
        match *self {}
    }

    fn pread(&self, _dst: &ReadBuf, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        match *self {}
    }
}

nbdbox_sdk::plugin!(EndlessStart);
