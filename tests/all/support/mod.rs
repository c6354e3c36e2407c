//! What the tests share: where the binary, guest components and client tools are
//! ([`tools`]), private temp dirs and test data ([`temp`]), running programs with a deadline
//! and checking their output ([`process`]), a long-running server fixture ([`server`]), a
//! raw NBD client ([`raw_client`], which keeps its own protocol constants: the suite must
//! not share code with the server it tests), and helpers for real clients ([`clients`]).
//!
//! Tests use everything through `use crate::support::*;` (and `crate::support::nbd::*` for
//! the protocol constants).

mod clients;
mod compare;
mod origins;
mod pki;
mod process;
mod raw_client;
mod server;
mod temp;
mod tools;
mod upstreams;

pub use clients::{export_names, nbdkit_captive, nbdsh, pid_alive, run_tool, shell};
pub use compare::{both, both_on_copies, same_as_nbdkit, sparse_image, INFO_AND_MAP};
pub use origins::{FlakyOrigin, Nginx, TestPki};
pub use pki::Pki;
pub use process::{
    assert_exit1, assert_success, describe, nbdbox, recorded, run_captive, run_captive_timeout, run_with_timeout,
    shell_quote, stderr, stdout, value, DEFAULT_TIMEOUT,
};
pub use raw_client::{be16_of, be32_of, be64_of, info_payload, meta_payload, nbd, OptReply, RawClient};
pub use server::{free_port, Server};
pub use temp::{disk, pattern, TempDir};
pub use tools::{bin, child_path, filter_arg, guest, guest_arg, prog_name, tool};
pub use upstreams::{NbdUpstream, S3rver};
