//! Black-box integration suite for the `nbdbox` binary.
//!
//! Everything here talks to the built executable (or to the NBD socket it
//! serves); nothing links the server's own code.  Set `NBDBOX_TEST_BIN` to run
//! the suite against another nbdkit-compatible binary (e.g. `/usr/sbin/nbdkit`,
//! useful to sanity-check what the tests expect; nbdbox-only features such as
//! the sandbox tests, `example1` and the 1.20-style `$nbd` will fail there).

mod support;

mod captive;
mod cli;
mod clients;
mod filters;
mod guestfish;
mod layers;
mod lifecycle;
mod plugin_example1;
mod plugin_file;
mod plugin_tar;
mod protocol_raw;
mod sandbox;
mod third_party;
