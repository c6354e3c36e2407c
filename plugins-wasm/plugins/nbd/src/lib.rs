//! nbd: nbdkit-nbd-plugin(1), serving what another NBD server serves. The server is a grant
//! (`uri=`, `socket=`, or `hostname=` with `port=`): the host checks it at startup and makes
//! the connection; this component speaks NBD over it (crate `nbd_client`), one request at a
//! time. Each instance opens its own upstream connection when a client connects to it, so
//! a parallel export runs as many upstream connections as it has requests in flight.
//! nbdkit's `shared=true`, `command=`, `socket-fd=`, `vsock=` and TLS to the upstream are
//! not offered (see README.md).

use nbd_client::wire::{
    CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE, STATE_HOLE, STATE_ZERO, TF_CAN_MULTI_CONN,
    TF_READ_ONLY, TF_ROTATIONAL, TF_SEND_CACHE, TF_SEND_FAST_ZERO, TF_SEND_FLUSH, TF_SEND_FUA, TF_SEND_TRIM,
    TF_SEND_WRITE_ZEROES,
};
use nbd_client::{Client, Transport};
use nbdbox_sdk::prelude::*;
use nbdbox_sdk::streams::{self, Socket};
use nbdbox_sdk::{debug, parse_bool};
use std::cell::RefCell;

/// Which grant names the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Uri,
    Socket,
    Hostname,
}

impl Server {
    fn key(self) -> &'static str {
        match self {
            Server::Uri => "uri",
            Server::Socket => "socket",
            Server::Hostname => "hostname",
        }
    }
}

#[derive(Default)]
struct Nbd {
    /// Every connection parameter given, to refuse a mix as nbdkit does.
    servers: Vec<Server>,
    /// `port=` was given (it goes with `hostname=`).
    port: bool,
    /// The export named by `uri=`'s path.
    uri_export: String,
    export: Option<String>,
    dynamic_export: bool,
    retry: u32,
}

/// One second between connection attempts, as nbdkit's `retry=`.
const RETRY_DELAY_NS: u64 = 1_000_000_000;

/// The largest trim, zero, cache or block status range sent in one request: the wire's
/// count is 32 bits, and 2 GiB keeps every chunk aligned to any block size.
const MAX_RANGE: u64 = 1 << 31;

/// The path of an `nbd://` or `nbd+unix://` URI, percent-decoded, without its leading `/`:
/// the export name (as libnbd's nbd_connect_uri reads it).
fn uri_export(uri: &str) -> String {
    let rest = uri.split_once("://").map_or("", |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |slash| &rest[slash + 1..]);
    percent_decode(path)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn no_tls(key: &str) -> Error {
    error(
        Errno::Einval,
        format!("{key}: nbdbox cannot connect to the server over TLS yet (use tls=off, or put the server on a local socket)"),
    )
}

impl Plugin for Nbd {
    const NAME: &'static str = "nbd";
    const DESCRIPTION: &'static str = "Serve what another NBD server serves";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("uri");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "uri",
            Kind::NbdUri,
            "[uri=]<URI>  nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH.",
        ),
        Key::new(
            "socket",
            Kind::UnixSocket,
            "socket=<SOCKNAME>  The Unix socket to connect to.",
        ),
        Key::new(
            "hostname",
            Kind::TcpHost,
            "hostname=<HOST>  The host to connect to over TCP.",
        ),
        Key::new("port", Kind::TcpPort, "port=<PORT>  TCP port (default 10809)."),
        Key::new(
            "export",
            Kind::Text,
            "export=<NAME>  Export name to connect to (default \"\").",
        ),
        Key::new(
            "dynamic-export",
            Kind::Bool,
            "dynamic-export=<BOOL>  Pass the client's export name to the server.",
        ),
        Key::new(
            "retry",
            Kind::Text,
            "retry=<N>  Retry the connection up to N times, a second apart (default 0).",
        ),
        Key::new(
            "shared",
            Kind::Bool,
            "shared=false  One server connection per client connection (the only mode).",
        ),
        Key::new("tls", Kind::Text, "tls=off  TLS to the server is not supported."),
        Key::new("tls-certificates", Kind::Text, "tls-certificates=  Not supported."),
        Key::new("tls-verify", Kind::Text, "tls-verify=  Not supported."),
        Key::new("tls-username", Kind::Text, "tls-username=  Not supported."),
        Key::new("tls-psk", Kind::Text, "tls-psk=  Not supported."),
    ];
    type Connection = NbdConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "uri" => {
                self.servers.push(Server::Uri);
                self.uri_export = uri_export(value);
            }
            "socket" => self.servers.push(Server::Socket),
            "hostname" => self.servers.push(Server::Hostname),
            "port" => self.port = true,
            "export" => self.export = Some(value.to_owned()),
            "dynamic-export" => self.dynamic_export = parse_bool(key, value)?,
            "retry" => {
                self.retry = nbdkit_parse::parse_unsigned(key, value).map_err(|why| error(Errno::Einval, why))?
            }
            "shared" => {
                if parse_bool(key, value)? {
                    return Err(error(
                        Errno::Einval,
                        "shared=true is not supported: nbdbox opens one server connection per client \
                         connection (and per request in flight)",
                    ));
                }
            }
            "tls" => {
                if !matches!(parse_bool(key, value), Ok(false)) {
                    return Err(no_tls(key));
                }
            }
            // tls-certificates, tls-verify, tls-username, tls-psk: each implies tls=on.
            _ => return Err(no_tls(key)),
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        match self.servers.as_slice() {
            [] => {
                return Err(error(
                    Errno::Einval,
                    "exactly one of 'socket', 'hostname' and 'uri' parameters must be specified",
                ))
            }
            [_] => {}
            _ => {
                return Err(error(
                    Errno::Einval,
                    "cannot mix Unix 'socket', TCP 'hostname'/'port' and 'uri' parameters",
                ))
            }
        }
        if self.port && self.servers[0] != Server::Hostname {
            return Err(error(
                Errno::Einval,
                "'port' parameter should only be used with 'hostname'",
            ));
        }
        if self.dynamic_export && self.export.is_some() {
            return Err(error(
                Errno::Einval,
                "cannot mix 'dynamic-export' with explicit export name",
            ));
        }
        Ok(())
    }

    /// NBD_OPT_LIST: with dynamic-export, what the server lists; otherwise the one export.
    fn list_exports(&self, _readonly: bool) -> Result<Vec<Export>> {
        if !self.dynamic_export {
            return Ok(vec![Export {
                name: self.export_name().to_owned(),
                description: None,
            }]);
        }
        let listed = nbd_client::list_exports(self.stream()?).map_err(|e| upstream_error("listing exports", e))?;
        Ok(listed
            .into_iter()
            .map(|listed| Export {
                name: listed.name,
                description: listed.description,
            })
            .collect())
    }

    /// Without dynamic-export, the default export is the one configured (nbdkit's
    /// nbdplug_default_export).
    fn default_export(&self, _readonly: bool) -> Option<String> {
        (!self.dynamic_export).then(|| self.export_name().to_owned())
    }

    fn open(&self, readonly: bool, export_name: &str) -> Result<NbdConnection> {
        let name = if self.dynamic_export {
            export_name
        } else {
            self.export_name()
        };
        let client = self.connect(name)?;
        Ok(NbdConnection {
            client: RefCell::new(client),
            readonly,
        })
    }
}

impl Nbd {
    /// The export asked of the server: the URI's, else `export=`, else "".
    fn export_name(&self) -> &str {
        match self.servers.first() {
            Some(Server::Uri) => &self.uri_export,
            _ => self.export.as_deref().unwrap_or(""),
        }
    }

    fn stream(&self) -> Result<Upstream> {
        let server = self.servers[0];
        let port = (server == Server::Hostname && self.port).then_some("port");
        Ok(Upstream(streams::connect(server.key(), port)?))
    }

    /// Connect and shake hands, `retry` more times a second apart if that fails.
    fn connect(&self, export_name: &str) -> Result<Client<Upstream>> {
        let mut retries = self.retry;
        loop {
            let attempt = self
                .stream()
                .and_then(|stream| Client::connect(stream, export_name).map_err(|e| upstream_error("handshake", e)));
            match attempt {
                Err(e) if retries > 0 => {
                    debug(&format!(
                        "connect failed; will try again: {}",
                        e.message.as_deref().unwrap_or("")
                    ));
                    retries -= 1;
                    if !nbdbox_sdk::sleep(RETRY_DELAY_NS) {
                        return Err(e);
                    }
                }
                result => return result,
            }
        }
    }
}

/// The host's socket as the client's transport: reads land in the request's buffer and
/// writes leave from it.
struct Upstream(Socket);

impl Transport for Upstream {
    type Error = Error;
    type ReadDst = ReadBuf;
    type WriteSrc = WriteBuf;

    fn send(&mut self, data: &[u8]) -> Result<()> {
        self.0.send(data)
    }

    fn send_from(&mut self, src: &WriteBuf, at: u32, count: u32) -> Result<()> {
        self.0.send_from(src, at, count)
    }

    fn receive(&mut self, count: u32) -> Result<Vec<u8>> {
        self.0.receive(count)
    }

    fn receive_into(&mut self, dst: &ReadBuf, at: u32, count: u32) -> Result<()> {
        self.0.receive_into(dst, at, count)
    }

    fn zero(&mut self, dst: &ReadBuf, at: u32, count: u32) {
        dst.zero(at, count);
    }
}

/// An error from the server or the connection to it, as this layer reports it.
fn upstream_error(what: &str, e: nbd_client::Error<Error>) -> Error {
    use nbd_client::Errno as Wire;
    match e {
        nbd_client::Error::Server { errno, message } => {
            let errno = match errno {
                Wire::Perm => Errno::Eperm,
                Wire::Io => Errno::Eio,
                Wire::NoMem => Errno::Enomem,
                Wire::Inval => Errno::Einval,
                Wire::NoSpc => Errno::Enospc,
                Wire::Overflow => Errno::Eoverflow,
                Wire::NotSup => Errno::Enotsup,
                Wire::Shutdown => Errno::Eshutdown,
            };
            // ENOTSUP is the expected answer to a fast zero the server cannot do quickly:
            // not worth a line in the log.
            match message {
                Some(message) if errno != Errno::Enotsup => error(errno, format!("{what}: the server says: {message}")),
                _ => nbdbox_sdk::errno(errno),
            }
        }
        nbd_client::Error::Refused(why) => error(Errno::Eio, format!("{what}: {why}")),
        nbd_client::Error::Protocol(why) => error(Errno::Eio, format!("{what}: the server broke the protocol: {why}")),
        nbd_client::Error::Transport(e) => e,
    }
}

struct NbdConnection {
    client: RefCell<Client<Upstream>>,
    readonly: bool,
}

impl NbdConnection {
    /// Run `request` on the client, mapping its error.
    fn with<R>(
        &self,
        what: &str,
        request: impl FnOnce(&mut Client<Upstream>) -> Result<R, nbd_client::Error<Error>>,
    ) -> Result<R> {
        request(&mut self.client.borrow_mut()).map_err(|e| upstream_error(what, e))
    }

    /// Split [offset, offset + count) into ranges of at most MAX_RANGE bytes.
    fn in_ranges(
        &self,
        what: &str,
        count: u64,
        offset: u64,
        mut request: impl FnMut(&mut Client<Upstream>, u32, u64) -> Result<(), nbd_client::Error<Error>>,
    ) -> Result<()> {
        let end = nbdbox_sdk::end_of(offset, count)?;
        let mut at = offset;
        while at < end {
            let n = (end - at).min(MAX_RANGE);
            self.with(what, |client| request(client, n as u32, at))?;
            at += n;
        }
        Ok(())
    }
}

fn fua(flags: CmdFlags) -> u16 {
    if flags.contains(CmdFlags::FUA) {
        CMD_FLAG_FUA
    } else {
        0
    }
}

#[nbdbox_sdk::connection]
impl Connection for NbdConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.client.borrow().export().size)
    }

    fn export_description(&self) -> Option<String> {
        self.client.borrow().export().description.clone()
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(self.client.borrow().export().block_size.map(|b| BlockSize {
            minimum: b.minimum,
            preferred: b.preferred,
            maximum: b.maximum,
        }))
    }

    /// The server's transmission flags, as nbdkit's nbd plugin maps them.
    fn capabilities(&self) -> Result<Capabilities> {
        let client = self.client.borrow();
        let export = client.export();
        let capabilities = Capabilities {
            can_write: !export.has(TF_READ_ONLY),
            can_flush: export.has(TF_SEND_FLUSH),
            is_rotational: export.has(TF_ROTATIONAL),
            can_trim: export.has(TF_SEND_TRIM),
            can_zero: if export.has(TF_SEND_WRITE_ZEROES) {
                ZeroMode::Native
            } else {
                ZeroMode::Emulate
            },
            can_fast_zero: export.has(TF_SEND_FAST_ZERO),
            can_extents: export.base_allocation.is_some(),
            can_fua: if export.has(TF_SEND_FUA) {
                FuaMode::Native
            } else {
                FuaMode::None
            },
            can_multi_conn: export.has(TF_CAN_MULTI_CONN),
            can_cache: if export.has(TF_SEND_CACHE) {
                CacheMode::Native
            } else {
                CacheMode::None
            },
        };
        Ok(if self.readonly || !capabilities.can_write {
            capabilities.read_only()
        } else {
            capabilities
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.with("read", |client| client.read(dst, count, offset))
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.with("write", |client| client.write(src, count, offset, fua(flags)))
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        self.with("flush", Client::flush)
    }

    fn trim(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.in_ranges("trim", count, offset, |client, n, at| client.trim(n, at, fua(flags)))
    }

    /// NO_HOLE unless the client allowed trimming, as nbdkit's nbd plugin sends it.
    fn zero(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let mut wire = fua(flags);
        if !flags.contains(CmdFlags::MAY_TRIM) {
            wire |= CMD_FLAG_NO_HOLE;
        }
        if flags.contains(CmdFlags::FAST_ZERO) {
            wire |= CMD_FLAG_FAST_ZERO;
        }
        self.in_ranges("zero", count, offset, |client, n, at| client.write_zeroes(n, at, wire))
    }

    fn extents(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let wire = if flags.contains(CmdFlags::REQ_ONE) {
            CMD_FLAG_REQ_ONE
        } else {
            0
        };
        let listed = self.with("block status", |client| {
            client.block_status(count.min(MAX_RANGE) as u32, offset, wire)
        })?;
        let mut at = offset;
        Ok(listed
            .into_iter()
            .map(|listed| {
                let mut flags = ExtentFlags::empty();
                if listed.flags & STATE_HOLE != 0 {
                    flags |= ExtentFlags::HOLE;
                }
                if listed.flags & STATE_ZERO != 0 {
                    flags |= ExtentFlags::ZERO;
                }
                let extent = Extent {
                    offset: at,
                    length: listed.length.into(),
                    flags,
                };
                at += u64::from(listed.length);
                extent
            })
            .collect())
    }

    fn cache(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.in_ranges("cache", count, offset, |client, n, at| client.cache(n, at))
    }
}

/// nbdkit's close: tell the server we are done.
impl Drop for NbdConnection {
    fn drop(&mut self) {
        self.client.get_mut().disconnect();
    }
}

nbdbox_sdk::plugin!(Nbd);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_comes_from_the_uri_path() {
        assert_eq!(uri_export("nbd://localhost"), "");
        assert_eq!(uri_export("nbd://localhost:10810/"), "");
        assert_eq!(uri_export("nbd://[::1]:99/disk"), "disk");
        assert_eq!(uri_export("nbd+unix:///my%20disk?socket=/tmp/s"), "my disk");
        assert_eq!(uri_export("nbd+unix://?socket=/tmp/s"), "");
        assert_eq!(uri_export("nbd://h/a/b#frag"), "a/b");
    }
}
