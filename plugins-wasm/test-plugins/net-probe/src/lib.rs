//! net-probe (test only): a plugin granted an HTTP origin (`url=`) and a slow one (`slow=`)
//! that, at get-ready, tries every way past its network grants through the host's own
//! interfaces — another host, another key, an absolute URL, headers the host owns or with a
//! line break, a redirect off the origin, a huge answer, a request held forever — and logs
//! each outcome as `net-probe: WHAT: refused (WHY)` or `net-probe: WHAT: SUCCEEDED`. Then it
//! serves a read-only disk of zeros (`size=`, default 1M), so a test can check the server
//! stayed up.

use nbdbox_sdk::http::{self, Header, Method, Options, Origin};
use nbdbox_sdk::prelude::*;
use nbdbox_sdk::streams;
use probe_report::report;

fn options(timeout_seconds: u32) -> Options {
    Options {
        ca_file_key: None,
        ca_directory_key: None,
        verify_tls: true,
        timeout_seconds,
        connect_timeout_seconds: 0,
        follow_redirects: true,
        user_agent: None,
        connections: 1,
    }
}

fn header(name: &str, value: &str) -> Vec<Header> {
    vec![Header {
        name: name.into(),
        value: value.into(),
    }]
}

fn probe() {
    report("open a key never granted", http::open("other", &options(0)));
    report("connect a stream to the URL's key", streams::connect("url", None));
    report(
        "connect a stream to a key never granted",
        streams::connect("other", None),
    );
    let origin = match http::open("url", &options(5)) {
        Ok(origin) => origin,
        Err(e) => return report("open the granted URL", Err::<(), _>(e)),
    };
    let get = |what: &str, path: &str, headers: &[Header]| {
        report(what, origin.send(Method::Get, path, headers, &[]).map(|r| r.status));
    };
    get("GET an absolute URL to another host", "http://127.0.0.2/disk.img", &[]);
    get("GET a path without a leading slash", "evil.example.com/disk.img", &[]);
    get("set the Host header", "/disk.img", &header("Host", "127.0.0.2"));
    get("set the Range header", "/disk.img", &header("Range", "bytes=0-1"));
    get(
        "a header with a line break",
        "/disk.img",
        &header("X-Smuggle", "a\r\nHost: 127.0.0.2"),
    );
    get("a path with a line break", "/disk.img\r\nHost: 127.0.0.2", &[]);
    get("an answer larger than 1 MiB", "/huge.bin", &[]);
    report(
        "follow a redirect off the origin",
        origin.probe(Some("/offsite/disk.img"), &[]),
    );
    match http::open("slow", &options(2)) {
        Ok(slow) => report(
            "a request the server holds forever",
            slow.send(Method::Get, "/disk.img", &[], &[]).map(|r| r.status),
        ),
        Err(e) => report("open the slow URL", Err::<(), _>(e)),
    }
    served(&origin);
}

/// The one thing that must work: the granted URL itself.
fn served(origin: &Origin) {
    let outcome = origin.probe(None, &[]).map(|object| object.size);
    nbdbox_sdk::info(&match outcome {
        Ok(size) => format!("the granted URL answers: {size} bytes"),
        Err(e) => format!("the granted URL fails: {e}"),
    });
}

#[derive(Default)]
struct NetProbe {
    size: Option<u64>,
}

impl Plugin for NetProbe {
    const NAME: &'static str = "net-probe";
    const DESCRIPTION: &'static str = "Test plugin: try to reach beyond its network grants";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Disk size (default 1M)."),
        Key::new("url", Kind::Url, "url=<URL>  The origin granted."),
        Key::new("slow", Kind::Url, "slow=<URL>  An origin that holds requests."),
    ];
    type Connection = Zeros;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        if key == "size" {
            self.size = Some(nbdbox_sdk::parse_size(key, value)?);
        }
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

nbdbox_sdk::plugin!(NetProbe);
