//! Black-box integration suite for the `nbdbox` binary.
//!
//! Everything here talks to the built executable (or to the NBD socket it
//! serves); nothing links the server's own code.  Set `NBDBOX_TEST_BIN` to run
//! the suite against another nbdkit-compatible binary (e.g. `/usr/sbin/nbdkit`,
//! useful to sanity-check what the tests expect; nbdbox-only features such as
//! the sandbox tests, `example1` and the 1.20-style `$nbd` will fail there).
//!
//! Every built-in component has a test module named after it (`plugin_NAME`,
//! `filter_NAME`): host/build.rs lists the built-ins in `components.rs`, and a
//! built-in without its module does not compile.

mod support;

mod captive;
mod cli;
mod clients;
mod filter_exitlast;
mod filter_readahead;
mod filter_retry;
mod filter_tar;
mod guestfish;
mod layers;
mod lifecycle;
mod plugin_example1;
mod plugin_file;
mod plugin_memory;
mod plugin_tar;
mod protocol_raw;
mod sandbox;
mod third_party;

// `foreach_builtin!` and `foreach_test_component!`, generated from the guest crates' manifests.
include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// Compiles only if the crate has a module named `$module`.
macro_rules! assert_test_exists {
    ($module:ident) => {
        #[allow(unused_imports)]
        use crate::$module as _;
    };
}

foreach_builtin!(assert_test_exists);

#[test]
fn every_test_component_is_built() {
    macro_rules! assert_built {
        ($name:ident) => {
            support::guest(concat!(stringify!($name), ".wasm"));
        };
    }
    foreach_test_component!(assert_built);
}
