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
mod config_file;
mod differential;
mod extended_headers;
mod filter_blocksize;
mod filter_blocksize_policy;
mod filter_cache;
mod filter_cacheextents;
mod filter_checkwrite;
mod filter_count;
mod filter_cow;
mod filter_delay;
mod filter_error;
mod filter_exitlast;
mod filter_exportname;
mod filter_fua;
mod filter_gzip;
mod filter_ip;
mod filter_limit;
mod filter_log;
mod filter_multi_conn;
mod filter_nocache;
mod filter_noextents;
mod filter_nofilter;
mod filter_noparallel;
mod filter_nozero;
mod filter_offset;
mod filter_partition;
mod filter_protect;
mod filter_readahead;
mod filter_readonly;
mod filter_retry;
mod filter_retry_request;
mod filter_stats;
mod filter_swab;
mod filter_tar;
mod filter_tls_fallback;
mod filter_truncate;
mod filter_xz;
mod guestfish;
mod hostile;
mod layers;
mod lifecycle;
#[path = "plugin_s3.rs"]
#[allow(non_snake_case)] // nbdkit spells the plugin `S3`
mod plugin_S3;
mod plugin_curl;
mod plugin_data;
mod plugin_example1;
mod plugin_file;
mod plugin_full;
mod plugin_info;
mod plugin_memory;
mod plugin_nbd;
mod plugin_null;
mod plugin_ones;
mod plugin_pattern;
mod plugin_random;
mod plugin_sparse_random;
mod plugin_tar;
mod plugin_zero;
mod probing;
mod protocol_raw;
mod readme;
mod sandbox;
mod third_party;
mod tls;
mod zero_copy;

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
