//! escape (test only): a plugin that reaches for the host through WASI itself, with every
//! way out of the sandbox that std offers. The host links every WASI interface but grants
//! nothing, so the component loads and each attempt must be refused at run time. At
//! get-ready it logs each outcome as `escape: WHAT: refused (WHY)` or `escape: WHAT:
//! SUCCEEDED` (as grant-probe does for the grants interface), then serves a read-only disk of
//! zeros (`[size=]SIZE`, default 1M), so a test can check the server stayed up.

use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};

use nbdbox_sdk::prelude::*;
use probe_report::report;

fn probe() {
    report("read /etc/passwd", std::fs::read("/etc/passwd"));
    report("list /", std::fs::read_dir("/"));
    report("create a file in /tmp", std::fs::File::create("/tmp/nbdbox-escape"));
    report("read the environment variable HOME", std::env::var("HOME"));
    for address in ["127.0.0.1:22", "127.0.0.1:10809"] {
        report(&format!("connect to {address}"), TcpStream::connect(address));
    }
    report("resolve localhost", ("localhost", 0).to_socket_addrs());
    report("read stdin", read_stdin());
}

/// Only bytes count as reading stdin: an empty stream gives nothing away.
fn read_stdin() -> io::Result<usize> {
    match io::stdin().read(&mut [0u8; 64])? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "end of file, nothing read",
        )),
        n => Ok(n),
    }
}

#[derive(Default)]
struct Escape {
    size: Option<u64>,
}

impl Plugin for Escape {
    const NAME: &'static str = "escape";
    const DESCRIPTION: &'static str = "Test plugin: reaches for the host filesystem and network through WASI";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[Key::new("size", Kind::Size, "[size=]<SIZE>  Disk size (default 1M).")];
    type Connection = Zeros;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        self.size = Some(nbdbox_sdk::parse_size(key, value)?);
        Ok(())
    }

    fn get_ready(&mut self) -> Result<()> {
        probe();
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<Zeros> {
        Ok(Zeros(self.size.unwrap_or(1 << 20)))
    }
}

/// A read-only disk of zeros of this size.
struct Zeros(u64);

#[nbdbox_sdk::connection]
impl Connection for Zeros {
    fn get_size(&self) -> Result<u64> {
        Ok(self.0)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        dst.zero(0, count);
        Ok(())
    }
}

nbdbox_sdk::plugin!(Escape);
