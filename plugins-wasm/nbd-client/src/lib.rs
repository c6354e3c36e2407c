//! An NBD client over any byte stream, one request in flight: the fixed newstyle handshake
//! (structured replies, the `base:allocation` context, NBD_OPT_GO with block sizes) and the
//! transmission commands, checking every reply against the spec. Plain Rust: the bytes go
//! through a [`Transport`], so the nbd plugin gives it the host's socket and the tests give
//! it byte literals.
//!
//! A read's data goes from the transport straight into the caller's buffer
//! ([`Transport::receive_into`]) and a write's from the caller's buffer
//! ([`Transport::send_from`]), never through this crate's memory.

pub mod wire;

use wire::*;

/// The stream to the server. `ReadDst` and `WriteSrc` are the buffers of reads and writes,
/// which the transport fills or sends without copying them through the client.
pub trait Transport {
    type Error: Clone;
    type ReadDst: ?Sized;
    type WriteSrc: ?Sized;
    fn send(&mut self, data: &[u8]) -> Result<(), Self::Error>;
    fn send_from(&mut self, src: &Self::WriteSrc, at: u32, count: u32) -> Result<(), Self::Error>;
    /// Exactly `count` bytes.
    fn receive(&mut self, count: u32) -> Result<Vec<u8>, Self::Error>;
    /// Exactly `count` bytes into [at, at + count) of `dst`.
    fn receive_into(&mut self, dst: &Self::ReadDst, at: u32, count: u32) -> Result<(), Self::Error>;
    /// Zero [at, at + count) of `dst` (a hole the server reported).
    fn zero(&mut self, dst: &Self::ReadDst, at: u32, count: u32);
}

/// Why a request or the handshake failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error<E> {
    /// The server answered the request with this error; the connection goes on.
    Server { errno: Errno, message: Option<String> },
    /// The server refused the handshake (an unknown export, TLS required...).
    Refused(String),
    /// The server broke the protocol: the connection is unusable.
    Protocol(String),
    /// The stream failed: the connection is unusable.
    Transport(E),
}

/// The errors the protocol names (NBD_E*); any other value reads as EINVAL, as the spec
/// tells clients to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    Perm,
    Io,
    NoMem,
    Inval,
    NoSpc,
    Overflow,
    NotSup,
    Shutdown,
}

impl Errno {
    pub fn from_wire(value: u32) -> Errno {
        match value {
            EPERM => Errno::Perm,
            EIO => Errno::Io,
            ENOMEM => Errno::NoMem,
            ENOSPC => Errno::NoSpc,
            EOVERFLOW => Errno::Overflow,
            ENOTSUP => Errno::NotSup,
            ESHUTDOWN => Errno::Shutdown,
            _ => Errno::Inval,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSize {
    pub minimum: u32,
    pub preferred: u32,
    pub maximum: u32,
}

/// What NBD_OPT_GO told about the export, and what the handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub size: u64,
    /// Transmission flags (`wire::TF_*`).
    pub flags: u16,
    pub block_size: Option<BlockSize>,
    pub description: Option<String>,
    pub structured_replies: bool,
    /// The id the server gave `base:allocation`, when it agreed to it.
    pub base_allocation: Option<u32>,
}

impl Export {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// One extent of a block status reply: its length and `wire::STATE_*` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub length: u32,
    pub flags: u32,
}

/// An exported name as NBD_OPT_LIST gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub description: Option<String>,
}

/// The largest payload this client accepts in one reply or chunk (the host's socket
/// receives at most 64 MiB at once).
const MAX_PAYLOAD: u32 = 64 << 20;
/// Option replies are short: names, descriptions, block sizes.
const MAX_OPTION_REPLY: u32 = 1 << 20;

fn protocol<T, E>(why: impl Into<String>) -> Result<T, Error<E>> {
    Err(Error::Protocol(why.into()))
}

/// The greeting: NBDMAGIC, IHAVEOPT and fixed newstyle, answered with our flags.
fn greet<T: Transport>(transport: &mut T) -> Result<(), Error<T::Error>> {
    let hello = transport.receive(18).map_err(Error::Transport)?;
    let mut fields = Fields::new(&hello);
    let (magic, style, flags) = (fields.u64(), fields.u64(), fields.u16());
    if magic != Some(NBDMAGIC) {
        return protocol("the server did not greet with NBDMAGIC: not an NBD server");
    }
    match style {
        Some(IHAVEOPT) => {}
        Some(OLDSTYLE_MAGIC) => return Err(Error::Refused("the server speaks only the oldstyle protocol".into())),
        _ => return protocol("unknown handshake style"),
    }
    let flags = flags.unwrap_or(0);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(Error::Refused("the server does not speak fixed newstyle".into()));
    }
    let mut ours = CLIENT_FIXED_NEWSTYLE;
    if flags & FLAG_NO_ZEROES != 0 {
        ours |= CLIENT_NO_ZEROES;
    }
    transport.send(&ours.to_be_bytes()).map_err(Error::Transport)
}

/// One option reply to `option`: its type and payload.
fn option_reply<T: Transport>(transport: &mut T, option: u32) -> Result<(u32, Vec<u8>), Error<T::Error>> {
    let header = transport.receive(OPTION_REPLY_LEN as u32).map_err(Error::Transport)?;
    let mut fields = Fields::new(&header);
    let (magic, echoed, reply, length) = (fields.u64(), fields.u32(), fields.u32(), fields.u32());
    if magic != Some(OPTION_REPLY_MAGIC) || echoed != Some(option) {
        return protocol(format!("a bad reply to option {option}"));
    }
    let (reply, length) = (reply.unwrap_or(0), length.unwrap_or(0));
    if length > MAX_OPTION_REPLY {
        return protocol(format!("a reply of {length} bytes to option {option}"));
    }
    let payload = receive_payload(transport, length)?;
    Ok((reply, payload))
}

fn receive_payload<T: Transport>(transport: &mut T, length: u32) -> Result<Vec<u8>, Error<T::Error>> {
    if length == 0 {
        return Ok(Vec::new());
    }
    if length > MAX_PAYLOAD {
        return protocol(format!("a payload of {length} bytes"));
    }
    transport.receive(length).map_err(Error::Transport)
}

/// An error reply's message: its payload, when it is text.
fn refusal(what: &str, reply: u32, payload: &[u8]) -> String {
    let mut why = format!("{what}: {}", reply_error_name(reply));
    if let Ok(text) = std::str::from_utf8(payload) {
        if !text.is_empty() {
            why.push_str(": ");
            why.push_str(text);
        }
    }
    why
}

/// NBD_OPT_STRUCTURED_REPLY: true when the server agrees.
fn structured_replies<T: Transport>(transport: &mut T) -> Result<bool, Error<T::Error>> {
    transport
        .send(&option(OPT_STRUCTURED_REPLY, &[]))
        .map_err(Error::Transport)?;
    match option_reply(transport, OPT_STRUCTURED_REPLY)? {
        (REP_ACK, _) => Ok(true),
        (reply, _) if reply & REP_FLAG_ERROR != 0 => Ok(false),
        (reply, _) => protocol(format!("reply {reply} to NBD_OPT_STRUCTURED_REPLY")),
    }
}

/// NBD_OPT_SET_META_CONTEXT base:allocation: the id the server gave it, if any.
fn base_allocation<T: Transport>(transport: &mut T, export_name: &str) -> Result<Option<u32>, Error<T::Error>> {
    let data = meta_context_data(export_name, &[BASE_ALLOCATION]);
    transport
        .send(&option(OPT_SET_META_CONTEXT, &data))
        .map_err(Error::Transport)?;
    let mut id = None;
    loop {
        match option_reply(transport, OPT_SET_META_CONTEXT)? {
            (REP_ACK, _) => return Ok(id),
            (REP_META_CONTEXT, payload) => {
                let mut fields = Fields::new(&payload);
                let context = fields.u32();
                if context.is_some() && fields.rest() == BASE_ALLOCATION.as_bytes() {
                    id = context;
                }
            }
            (reply, _) if reply & REP_FLAG_ERROR != 0 => return Ok(None),
            (reply, _) => return protocol(format!("reply {reply} to NBD_OPT_SET_META_CONTEXT")),
        }
    }
}

/// NBD_OPT_GO, asking for the description and block sizes.
fn go<T: Transport>(
    transport: &mut T,
    export_name: &str,
    structured_replies: bool,
    base_allocation: Option<u32>,
) -> Result<Export, Error<T::Error>> {
    let data = go_data(export_name, &[INFO_DESCRIPTION, INFO_BLOCK_SIZE]);
    transport.send(&option(OPT_GO, &data)).map_err(Error::Transport)?;
    let mut export = Export {
        size: 0,
        flags: 0,
        block_size: None,
        description: None,
        structured_replies,
        base_allocation,
    };
    let mut seen_export = false;
    loop {
        let (reply, payload) = option_reply(transport, OPT_GO)?;
        match reply {
            REP_ACK if seen_export => return Ok(export),
            REP_ACK => return protocol("NBD_OPT_GO ended without the export's size"),
            REP_INFO => {
                let mut fields = Fields::new(&payload);
                match fields.u16() {
                    Some(INFO_EXPORT) => {
                        let (size, flags) = (fields.u64(), fields.u16());
                        let (Some(size), Some(flags)) = (size, flags) else {
                            return protocol("a short NBD_INFO_EXPORT");
                        };
                        (export.size, export.flags, seen_export) = (size, flags, true);
                    }
                    Some(INFO_BLOCK_SIZE) => {
                        let (minimum, preferred, maximum) = (fields.u32(), fields.u32(), fields.u32());
                        let (Some(minimum), Some(preferred), Some(maximum)) = (minimum, preferred, maximum) else {
                            return protocol("a short NBD_INFO_BLOCK_SIZE");
                        };
                        export.block_size = Some(BlockSize {
                            minimum,
                            preferred,
                            maximum,
                        });
                    }
                    Some(INFO_DESCRIPTION) => {
                        export.description = Some(String::from_utf8_lossy(fields.rest()).into_owned());
                    }
                    // Information we did not ask for: ignored, as the spec allows.
                    _ => {}
                }
            }
            reply if reply & REP_FLAG_ERROR != 0 => {
                return Err(Error::Refused(refusal(
                    &format!("export '{export_name}'"),
                    reply,
                    &payload,
                )))
            }
            reply => return protocol(format!("reply {reply} to NBD_OPT_GO")),
        }
    }
}

/// The exports a server lists (NBD_OPT_LIST), leaving it with NBD_OPT_ABORT.
pub fn list_exports<T: Transport>(mut transport: T) -> Result<Vec<Listed>, Error<T::Error>> {
    greet(&mut transport)?;
    transport.send(&option(OPT_LIST, &[])).map_err(Error::Transport)?;
    let mut listed = Vec::new();
    loop {
        match option_reply(&mut transport, OPT_LIST)? {
            (REP_ACK, _) => break,
            (REP_SERVER, payload) => {
                let mut fields = Fields::new(&payload);
                let name = fields
                    .u32()
                    .and_then(|length| fields.bytes(length as usize))
                    .map(|name| String::from_utf8_lossy(name).into_owned());
                let Some(name) = name else {
                    return protocol("a short NBD_REP_SERVER");
                };
                let rest = fields.rest();
                listed.push(Listed {
                    name,
                    description: (!rest.is_empty()).then(|| String::from_utf8_lossy(rest).into_owned()),
                });
            }
            (reply, payload) if reply & REP_FLAG_ERROR != 0 => {
                return Err(Error::Refused(refusal("listing exports", reply, &payload)))
            }
            (reply, _) => return protocol(format!("reply {reply} to NBD_OPT_LIST")),
        }
    }
    // The server may answer the abort or just hang up: nothing more is read.
    transport.send(&option(OPT_ABORT, &[])).map_err(Error::Transport)?;
    Ok(listed)
}

/// How a reply to the request in flight starts.
enum Reply {
    Simple { error: u32 },
    Chunk { flags: u16, kind: u16 },
}

/// A connection in the transmission phase, one request at a time. After a protocol or
/// transport failure every request fails with that first error.
pub struct Client<T: Transport> {
    transport: T,
    export: Export,
    cookie: u64,
    broken: Option<Error<T::Error>>,
}

impl<T: Transport> Client<T> {
    /// The handshake, for `export_name`.
    pub fn connect(mut transport: T, export_name: &str) -> Result<Client<T>, Error<T::Error>> {
        greet(&mut transport)?;
        let structured = structured_replies(&mut transport)?;
        let base_allocation = if structured {
            base_allocation(&mut transport, export_name)?
        } else {
            None
        };
        let export = go(&mut transport, export_name, structured, base_allocation)?;
        Ok(Client {
            transport,
            export,
            cookie: 0,
            broken: None,
        })
    }

    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Run one request; a failure of the connection is kept for every later request.
    fn guarded<R>(
        &mut self,
        request: impl FnOnce(&mut Self) -> Result<R, Error<T::Error>>,
    ) -> Result<R, Error<T::Error>> {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        let result = request(self);
        if let Err(e @ (Error::Protocol(_) | Error::Transport(_))) = &result {
            self.broken = Some(e.clone());
        }
        result
    }

    fn send_request(&mut self, flags: u16, command: u16, offset: u64, length: u32) -> Result<u64, Error<T::Error>> {
        self.cookie += 1;
        let header = request(flags, command, self.cookie, offset, length);
        self.transport.send(&header).map_err(Error::Transport)?;
        Ok(self.cookie)
    }

    fn receive(&mut self, count: u32) -> Result<Vec<u8>, Error<T::Error>> {
        self.transport.receive(count).map_err(Error::Transport)
    }

    /// The start of the next reply, which must be to `cookie`.
    fn reply(&mut self, cookie: u64) -> Result<Reply, Error<T::Error>> {
        let head = self.receive(SIMPLE_REPLY_LEN as u32)?;
        let mut fields = Fields::new(&head);
        let magic = fields.u32();
        let (reply, echoed) = match magic {
            Some(SIMPLE_REPLY_MAGIC) => {
                let error = fields.u32().unwrap_or(0);
                (Reply::Simple { error }, fields.u64())
            }
            Some(STRUCTURED_REPLY_MAGIC) if self.export.structured_replies => {
                let (flags, kind) = (fields.u16().unwrap_or(0), fields.u16().unwrap_or(0));
                (Reply::Chunk { flags, kind }, fields.u64())
            }
            _ => return protocol(format!("a reply with bad magic {:#x}", magic.unwrap_or(0))),
        };
        if echoed != Some(cookie) {
            return protocol(format!("a reply to cookie {echoed:?} while {cookie} was in flight"));
        }
        Ok(reply)
    }

    /// A chunk's length (the rest of its header).
    fn chunk_length(&mut self) -> Result<u32, Error<T::Error>> {
        let bytes = self.receive(4)?;
        Ok(Fields::new(&bytes).u32().unwrap_or(0))
    }

    fn server_error(errno: u32, message: Option<String>) -> Error<T::Error> {
        Error::Server {
            errno: Errno::from_wire(errno),
            message,
        }
    }

    /// An error chunk's payload: the error and its message (and, for ERROR_OFFSET, where).
    fn chunk_error(kind: u16, payload: &[u8]) -> Result<Error<T::Error>, Error<T::Error>> {
        let mut fields = Fields::new(payload);
        let (errno, length) = (fields.u32(), fields.u16());
        let (Some(errno), Some(length)) = (errno, length) else {
            return protocol("a short error chunk");
        };
        let Some(message) = fields.bytes(length.into()) else {
            return protocol("an error chunk's message runs past its end");
        };
        if errno == 0 {
            return protocol("an error chunk without an error");
        }
        let mut message = String::from_utf8_lossy(message).into_owned();
        if kind == CHUNK_ERROR_OFFSET {
            if let Some(offset) = fields.u64() {
                message = format!("{message} (at offset {offset})");
            }
        }
        Ok(Self::server_error(errno, (!message.is_empty()).then_some(message)))
    }

    /// A chunk that every reply may hold: NONE, or an error (the first one is kept).
    fn common_chunk(
        &mut self,
        flags: u16,
        kind: u16,
        length: u32,
        error: &mut Option<Error<T::Error>>,
    ) -> Result<(), Error<T::Error>> {
        let payload = receive_payload(&mut self.transport, length)?;
        if kind & CHUNK_FLAG_ERROR != 0 {
            let e = Self::chunk_error(kind, &payload)?;
            error.get_or_insert(e);
            return Ok(());
        }
        if kind == CHUNK_NONE && length == 0 && flags & REPLY_FLAG_DONE != 0 {
            return Ok(());
        }
        protocol(format!("an unexpected chunk of type {kind} ({length} bytes)"))
    }

    /// Finish a reply that carries no data: a simple one, or chunks up to DONE.
    fn finish(&mut self, cookie: u64) -> Result<(), Error<T::Error>> {
        let mut error = None;
        loop {
            match self.reply(cookie)? {
                Reply::Simple { error: 0 } => return Ok(()),
                Reply::Simple { error } => return Err(Self::server_error(error, None)),
                Reply::Chunk { flags, kind } => {
                    let length = self.chunk_length()?;
                    self.common_chunk(flags, kind, length, &mut error)?;
                    if flags & REPLY_FLAG_DONE != 0 {
                        return error.map_or(Ok(()), Err);
                    }
                }
            }
        }
    }

    fn command(&mut self, flags: u16, command: u16, offset: u64, length: u32) -> Result<(), Error<T::Error>> {
        self.guarded(|client| {
            let cookie = client.send_request(flags, command, offset, length)?;
            client.finish(cookie)
        })
    }

    /// NBD_CMD_READ of `count` bytes at `offset` into [0, count) of `dst`.
    pub fn read(&mut self, dst: &T::ReadDst, count: u32, offset: u64) -> Result<(), Error<T::Error>> {
        self.guarded(|client| client.read_now(dst, count, offset))
    }

    fn read_now(&mut self, dst: &T::ReadDst, count: u32, offset: u64) -> Result<(), Error<T::Error>> {
        let cookie = self.send_request(0, CMD_READ, offset, count)?;
        // Where each data or hole chunk landed, to check at the end that they cover the
        // request once.
        let mut covered: Vec<(u32, u32)> = Vec::new();
        let mut error = None;
        loop {
            let (flags, kind) = match self.reply(cookie)? {
                Reply::Simple { error: 0 } => {
                    return self.transport.receive_into(dst, 0, count).map_err(Error::Transport)
                }
                Reply::Simple { error } => return Err(Self::server_error(error, None)),
                Reply::Chunk { flags, kind } => (flags, kind),
            };
            match kind {
                CHUNK_OFFSET_DATA => {
                    let head = self.receive(12)?;
                    let mut fields = Fields::new(&head);
                    let (length, at) = (fields.u32().unwrap_or(0), fields.u64().unwrap_or(0));
                    if length <= 8 {
                        return protocol(format!("a data chunk of {length} bytes"));
                    }
                    let at = Self::within(at, length - 8, offset, count)?;
                    self.transport
                        .receive_into(dst, at, length - 8)
                        .map_err(Error::Transport)?;
                    covered.push((at, length - 8));
                }
                CHUNK_OFFSET_HOLE => {
                    let body = self.receive(16)?;
                    let mut fields = Fields::new(&body);
                    let (length, at, hole) = (fields.u32(), fields.u64().unwrap_or(0), fields.u32().unwrap_or(0));
                    if length != Some(12) || hole == 0 {
                        return protocol("a malformed hole chunk");
                    }
                    let at = Self::within(at, hole, offset, count)?;
                    self.transport.zero(dst, at, hole);
                    covered.push((at, hole));
                }
                _ => {
                    let length = self.chunk_length()?;
                    self.common_chunk(flags, kind, length, &mut error)?;
                }
            }
            if flags & REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(error) = error {
            return Err(error);
        }
        covered.sort_unstable();
        let mut end = 0;
        for (at, length) in covered {
            if at != end {
                return protocol(format!(
                    "a read reply that covers byte {end} {}",
                    if at < end { "twice" } else { "not at all" }
                ));
            }
            end = at + length;
        }
        if end != count {
            return protocol(format!("a read reply with {end} of {count} bytes"));
        }
        Ok(())
    }

    /// Where a chunk for [chunk, chunk + length) goes in a read of `count` bytes at `offset`.
    fn within(chunk: u64, length: u32, offset: u64, count: u32) -> Result<u32, Error<T::Error>> {
        match chunk.checked_sub(offset) {
            Some(at) if at + u64::from(length) <= u64::from(count) => Ok(at as u32),
            _ => protocol(format!(
                "a chunk at {chunk} (+{length}) outside the read of {count} at {offset}"
            )),
        }
    }

    /// NBD_CMD_WRITE of [0, count) of `src` at `offset`.
    pub fn write(&mut self, src: &T::WriteSrc, count: u32, offset: u64, flags: u16) -> Result<(), Error<T::Error>> {
        self.guarded(|client| {
            let cookie = client.send_request(flags, CMD_WRITE, offset, count)?;
            client.transport.send_from(src, 0, count).map_err(Error::Transport)?;
            client.finish(cookie)
        })
    }

    pub fn flush(&mut self) -> Result<(), Error<T::Error>> {
        self.command(0, CMD_FLUSH, 0, 0)
    }

    pub fn trim(&mut self, count: u32, offset: u64, flags: u16) -> Result<(), Error<T::Error>> {
        self.command(flags, CMD_TRIM, offset, count)
    }

    pub fn write_zeroes(&mut self, count: u32, offset: u64, flags: u16) -> Result<(), Error<T::Error>> {
        self.command(flags, CMD_WRITE_ZEROES, offset, count)
    }

    pub fn cache(&mut self, count: u32, offset: u64) -> Result<(), Error<T::Error>> {
        self.command(0, CMD_CACHE, offset, count)
    }

    /// NBD_CMD_BLOCK_STATUS for base:allocation: extents from `offset` on.
    pub fn block_status(&mut self, count: u32, offset: u64, flags: u16) -> Result<Vec<Extent>, Error<T::Error>> {
        let Some(context) = self.export.base_allocation else {
            return Err(Error::Server {
                errno: Errno::Inval,
                message: Some("the server did not agree to base:allocation".into()),
            });
        };
        self.guarded(|client| {
            let cookie = client.send_request(flags, CMD_BLOCK_STATUS, offset, count)?;
            let mut extents = Vec::new();
            let mut error = None;
            loop {
                let (flags, kind) = match client.reply(cookie)? {
                    Reply::Simple { error: 0 } => return protocol("a simple reply to block status"),
                    Reply::Simple { error } => return Err(Self::server_error(error, None)),
                    Reply::Chunk { flags, kind } => (flags, kind),
                };
                let length = client.chunk_length()?;
                if kind == CHUNK_BLOCK_STATUS {
                    let payload = receive_payload(&mut client.transport, length)?;
                    if !extents.is_empty() {
                        return protocol("two block status chunks for one context");
                    }
                    extents = Self::descriptors(context, &payload)?;
                } else {
                    client.common_chunk(flags, kind, length, &mut error)?;
                }
                if flags & REPLY_FLAG_DONE != 0 {
                    break;
                }
            }
            match error {
                Some(error) => Err(error),
                None if extents.is_empty() => protocol("a block status reply without extents"),
                None => Ok(extents),
            }
        })
    }

    /// A block status chunk's payload: the context id, then (length, flags) pairs.
    fn descriptors(context: u32, payload: &[u8]) -> Result<Vec<Extent>, Error<T::Error>> {
        let mut fields = Fields::new(payload);
        if fields.u32() != Some(context) {
            return protocol("block status for a context that was not asked for");
        }
        let pairs = fields.rest();
        if !pairs.len().is_multiple_of(8) {
            return protocol("a block status chunk with a partial descriptor");
        }
        let mut fields = Fields::new(pairs);
        let mut extents = Vec::with_capacity(pairs.len() / 8);
        while let (Some(length), Some(flags)) = (fields.u32(), fields.u32()) {
            // A zero-length extent says nothing; skip it rather than fail.
            if length > 0 {
                extents.push(Extent { length, flags });
            }
        }
        Ok(extents)
    }

    /// NBD_CMD_DISC: the server closes the connection; there is no reply.
    pub fn disconnect(&mut self) {
        if self.broken.is_none() {
            let _ = self.send_request(0, CMD_DISC, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests;
