//! The fixed-newstyle handshake, as nbdkit drives it (server/protocol-handshake-newstyle.c):
//! option by option until the client picks an export (GO / EXPORT_NAME), aborts, or breaks
//! the protocol. nbdkit calls this "option haggling".

use super::{eflags, Seat, Server, Transport};
use crate::api::Error;
use crate::backend::{Export, Opened};
use crate::config::TlsMode;
use crate::log;
use crate::protocol::consts::*;
use crate::protocol::handshake::{self as codec, InvalidOption};
use crate::protocol::transmission::Framing;
use crate::protocol::ProtocolError;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// The export a client chose, with what was negotiated on the way.
pub struct Negotiated {
    pub export: Arc<Export>,
    pub opened: Opened,
    pub framing: Framing,
    /// base:allocation was selected for this export by SET_META_CONTEXT.
    pub base_allocation: bool,
    /// This client's place among the connections served at once.
    pub seat: Seat,
}

/// Why a handshake ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("cannot open export '{name}': {error}")]
    ExportName { name: String, error: Error },
    #[error("{0}")]
    NoSeat(String),
}

/// Replies to one option are sent as they are made once this much is waiting.
const STREAM_REPLIES_AT: usize = 64 << 10;

/// The state of option negotiation.
struct Negotiation<'a> {
    server: &'a Server,
    /// Replaced by its TLS session at STARTTLS.
    transport: Transport,
    framing: Framing,
    /// The export name SET_META_CONTEXT selected base:allocation for.
    meta_export: Option<String>,
    listed: bool,
    options_left: usize,
    out: Vec<u8>,
}

/// What one option led to.
enum Next {
    /// Haggling goes on.
    Haggle,
    /// The client chose an export.
    Serve(Negotiated),
    /// The client is done (ABORT), or must be let go.
    End,
}

/// The oldstyle protocol (`-o`, nbdkit's protocol-handshake-oldstyle.c): no options; the
/// greeting carries the default export's size and flags, and transmission follows at once
/// with simple replies.
pub fn oldstyle(server: &Server, transport: Transport) -> Result<Option<(Negotiated, Transport)>, HandshakeError> {
    let n = Negotiation {
        server,
        transport,
        framing: Framing::Simple,
        meta_export: None,
        listed: false,
        options_left: 0,
        out: Vec::new(),
    };
    let seat = n.seat().map_err(HandshakeError::NoSeat)?;
    let (export, opened) = n.open("").map_err(|error| HandshakeError::ExportName {
        name: String::new(),
        error,
    })?;
    let flags = eflags(&opened.caps, false, export.thread_model());
    (&n.transport).write_all(&codec::oldstyle_greeting(opened.size, flags))?;
    let negotiated = n.negotiated(export, opened, "", seat);
    Ok(Some((negotiated, n.transport)))
}

/// Negotiate over `transport`; on success the transmission phase takes it over.
pub fn negotiate(server: &Server, transport: Transport) -> Result<Option<(Negotiated, Transport)>, HandshakeError> {
    let offered = (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) & server.options.handshake_mask;
    (&transport).write_all(&codec::greeting(offered))?;
    let mut flags = [0; 4];
    (&transport).read_exact(&mut flags)?;
    let client_flags = u32::from_be_bytes(flags);
    codec::check_client_flags(client_flags, offered)?;
    let fixed = client_flags & FLAG_C_FIXED_NEWSTYLE != 0;
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;

    let mut n = Negotiation {
        server,
        transport,
        framing: Framing::Simple,
        meta_export: None,
        listed: false,
        options_left: MAX_OPTIONS,
        out: Vec::new(),
    };
    loop {
        if n.options_left == 0 {
            return Err(ProtocolError::TooManyOptions.into());
        }
        n.options_left -= 1;
        let mut header = [0; codec::OPTION_HEADER_LEN];
        (&n.transport).read_exact(&mut header)?;
        let header = codec::parse_option_header(&header)?;
        let mut payload = vec![0; header.length as usize];
        (&n.transport).read_exact(&mut payload)?;
        n.out.clear();
        let option = header.option;
        log::debug!(server.log, "option {option} with {} bytes of data", payload.len());
        let tls_required = server.options.tls.mode() == TlsMode::Require && !n.transport.is_tls();

        let next = if !fixed && option != OPT_EXPORT_NAME {
            n.error(option, REP_ERR_INVALID, "fixed newstyle was not negotiated");
            Next::Haggle
        } else if tls_required && !matches!(option, OPT_STARTTLS | OPT_ABORT) {
            // nbdkit's CVE-2019-14850 rule: before TLS nothing reaches a layer. EXPORT_NAME has
            // no error reply, so that client is let go.
            if option == OPT_EXPORT_NAME {
                return Ok(None);
            }
            n.error(option, REP_ERR_TLS_REQD, "TLS is required before this option");
            Next::Haggle
        } else {
            match option {
                // A client that negotiated extended headers must not use EXPORT_NAME, which
                // cannot refuse: it is let go.
                OPT_EXPORT_NAME if n.framing == Framing::Extended => return Ok(None),
                OPT_EXPORT_NAME => {
                    let name = codec::parse_export_name(&payload)?;
                    // EXPORT_NAME has no error reply: a client without a seat is closed.
                    let seat = n.seat().map_err(HandshakeError::NoSeat)?;
                    let (export, opened) = n.open(name).map_err(|error| HandshakeError::ExportName {
                        name: log::sanitize(name),
                        error,
                    })?;
                    let flags = eflags(&opened.caps, n.framing != Framing::Simple, export.thread_model());
                    codec::export_name_reply(&mut n.out, opened.size, flags, no_zeroes);
                    Next::Serve(n.negotiated(export, opened, name, seat))
                }
                OPT_ABORT => {
                    codec::option_reply(&mut n.out, option, REP_ACK, &[]);
                    // The client may close without reading the ACK.
                    let _ = (&n.transport).write_all(&n.out);
                    return Ok(None);
                }
                OPT_LIST => {
                    n.list(option, &payload);
                    Next::Haggle
                }
                OPT_STARTTLS => n.start_tls(option, &payload)?,
                OPT_INFO | OPT_GO => match n.info_or_go(option, &payload) {
                    Some(negotiated) => Next::Serve(negotiated),
                    None => Next::Haggle,
                },
                OPT_STRUCTURED_REPLY if !payload.is_empty() => {
                    n.error(option, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
                    Next::Haggle
                }
                OPT_STRUCTURED_REPLY | OPT_EXTENDED_HEADERS if server.options.no_structured_replies => {
                    n.error(option, REP_ERR_UNSUP, "structured replies are disabled (--no-sr)");
                    Next::Haggle
                }
                OPT_EXTENDED_HEADERS if !payload.is_empty() => {
                    n.error(option, REP_ERR_INVALID, "EXTENDED_HEADERS takes no data");
                    Next::Haggle
                }
                OPT_STRUCTURED_REPLY if n.framing == Framing::Extended => {
                    n.error(option, REP_ERR_EXT_HEADER_REQD, "extended headers are already in use");
                    Next::Haggle
                }
                OPT_STRUCTURED_REPLY => {
                    n.framing = Framing::Structured;
                    codec::option_reply(&mut n.out, option, REP_ACK, &[]);
                    Next::Haggle
                }
                // Extended headers include structured replies (the NBD spec).
                OPT_EXTENDED_HEADERS => {
                    n.framing = Framing::Extended;
                    codec::option_reply(&mut n.out, option, REP_ACK, &[]);
                    Next::Haggle
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT if server.options.no_meta_contexts => {
                    n.error(option, REP_ERR_UNSUP, "meta contexts are disabled (--no-mc)");
                    Next::Haggle
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    n.meta_context(option, &payload)?;
                    Next::Haggle
                }
                _ => {
                    n.error(option, REP_ERR_UNSUP, "unsupported option");
                    Next::Haggle
                }
            }
        };
        n.flush()?;
        match next {
            Next::Haggle => {}
            Next::Serve(negotiated) => return Ok(Some((negotiated, n.transport))),
            Next::End => return Ok(None),
        }
    }
}

impl Negotiation<'_> {
    /// Send the replies made so far.
    fn flush(&mut self) -> io::Result<()> {
        (&self.transport).write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// NBD_OPT_STARTTLS: acknowledged in the clear, then the TLS handshake. Everything
    /// negotiated before it is forgotten (the NBD spec; nbdkit's CVE-2021-3716 fix).
    fn start_tls(&mut self, option: u32, payload: &[u8]) -> Result<Next, HandshakeError> {
        let tls = &self.server.options.tls;
        if !payload.is_empty() {
            self.error(option, REP_ERR_INVALID, "STARTTLS takes no data");
            return Ok(Next::Haggle);
        }
        if tls.mode() == TlsMode::Off || matches!(self.transport, Transport::Stdio { .. }) {
            self.error(option, REP_ERR_POLICY, "TLS is not enabled on this server");
            return Ok(Next::Haggle);
        }
        if self.transport.is_tls() {
            self.error(option, REP_ERR_INVALID, "TLS is already in use");
            return Ok(Next::Haggle);
        }
        codec::option_reply(&mut self.out, option, REP_ACK, &[]);
        self.flush()?;
        self.transport = tls.upgrade(&self.transport)?;
        crate::runtime::peer::serve_peer(Arc::new(self.transport.peer()));
        self.framing = Framing::Simple;
        self.meta_export = None;
        self.listed = false;
        self.options_left = MAX_OPTIONS;
        // Under --tls=require, preconnect waits for TLS: a client that never upgrades reaches
        // no layer.
        if tls.mode() == TlsMode::Require {
            if let Err(e) = self.server.exports.preconnect() {
                log::debug!(self.server.log, "refused after STARTTLS: {e}");
                return Ok(Next::End);
            }
        }
        Ok(Next::Haggle)
    }

    fn error(&mut self, option: u32, reply: u32, message: &str) {
        codec::option_reply(&mut self.out, option, reply, message.as_bytes());
    }

    fn negotiated(&self, export: Arc<Export>, opened: Opened, name: &str, seat: Seat) -> Negotiated {
        Negotiated {
            export,
            opened,
            framing: self.framing,
            base_allocation: self.meta_export.as_deref() == Some(name),
            seat,
        }
    }

    /// A seat for a client about to be served, or why there is none.
    fn seat(&self) -> Result<Seat, String> {
        self.server.seats.take().ok_or_else(|| {
            let why = format!(
                "too many connections: this server serves {} at once (--max-connections)",
                self.server.seats.max()
            );
            log::warning!(self.server.log, "refused a client: {why}");
            why
        })
    }

    /// The export `name` selects, opened.
    fn open(&self, name: &str) -> Result<(Arc<Export>, Opened), Error> {
        self.server.exports.open(name)
    }

    fn list(&mut self, option: u32, payload: &[u8]) {
        if !payload.is_empty() {
            return self.error(option, REP_ERR_INVALID, "LIST takes no data");
        }
        if self.listed {
            return self.error(option, REP_ERR_INVALID, "LIST may be sent only once");
        }
        self.listed = true;
        let listed = match self.server.exports.list() {
            Ok(listed) => listed,
            Err(_) => return self.error(option, REP_ERR_PLATFORM, "listing exports failed"),
        };
        for export in &listed {
            let payload = codec::rep_server_payload(&export.name, export.description.as_deref());
            codec::option_reply(&mut self.out, option, REP_SERVER, &payload);
        }
        self.options_left += MAX_OPTIONS * listed.len();
        codec::option_reply(&mut self.out, option, REP_ACK, &[]);
    }

    /// INFO or GO; Some when GO chose the export.
    fn info_or_go(&mut self, option: u32, payload: &[u8]) -> Option<Negotiated> {
        let request = match codec::parse_info_request(payload) {
            Ok(request) => request,
            Err(InvalidOption(why)) => {
                self.error(option, REP_ERR_INVALID, why);
                return None;
            }
        };
        // Taken before the export is opened: a refused client costs no instance.
        let seat = match option {
            OPT_GO => match self.seat() {
                Ok(seat) => Some(seat),
                Err(why) => {
                    self.error(option, REP_ERR_UNKNOWN, &why);
                    return None;
                }
            },
            _ => None,
        };
        let (export, opened) = match self.open(request.name) {
            Ok(opened) => opened,
            Err(e) => {
                let why = e.to_string();
                log::error!(
                    self.server.log,
                    "cannot open export '{}': {why}",
                    log::sanitize(request.name)
                );
                self.error(option, REP_ERR_UNKNOWN, &why);
                return None;
            }
        };
        let asked_block_size = request.info_types.contains(&INFO_BLOCK_SIZE);
        let block_size = opened.block_size().ok().flatten();
        // A client that would not learn an alignment beyond the 512 bytes portable clients keep
        // to anyway cannot keep to it (the NBD spec, NBD_REP_ERR_BLOCK_SIZE_REQD): it must
        // ask, or be refused.
        if let (OPT_GO, false, Some(b)) = (option, asked_block_size, block_size) {
            if b.minimum > 512 {
                let why = format!(
                    "this export needs requests aligned to {} bytes: the client must ask for NBD_INFO_BLOCK_SIZE",
                    b.minimum
                );
                self.error(option, REP_ERR_BLOCK_SIZE_REQD, &why);
                return None;
            }
        }
        let flags = eflags(&opened.caps, self.framing != Framing::Simple, export.thread_model());
        let payload = codec::info_export_payload(opened.size, flags);
        codec::option_reply(&mut self.out, option, REP_INFO, &payload);
        for &info in &request.info_types {
            match info {
                INFO_NAME => {
                    codec::option_reply(&mut self.out, option, REP_INFO, &codec::info_name_payload(request.name))
                }
                INFO_DESCRIPTION => {
                    if let Some(description) = opened.export_description() {
                        let payload = codec::info_description_payload(&description);
                        codec::option_reply(&mut self.out, option, REP_INFO, &payload);
                    }
                }
                INFO_BLOCK_SIZE => {
                    if let Some(b) = block_size {
                        let payload = codec::info_block_size_payload(b.minimum, b.preferred, b.maximum);
                        codec::option_reply(&mut self.out, option, REP_INFO, &payload);
                    }
                }
                // INFO_EXPORT is always sent; unknown requests are ignored.
                _ => {}
            }
        }
        codec::option_reply(&mut self.out, option, REP_ACK, &[]);
        seat.map(|seat| self.negotiated(export, opened, request.name, seat))
    }

    fn meta_context(&mut self, option: u32, payload: &[u8]) -> io::Result<()> {
        let set = option == OPT_SET_META_CONTEXT;
        let request = match codec::parse_meta_request(payload) {
            Ok(request) => request,
            Err(InvalidOption(why)) => {
                self.error(option, REP_ERR_INVALID, why);
                return Ok(());
            }
        };
        if set && self.framing == Framing::Simple {
            self.error(
                option,
                REP_ERR_INVALID,
                "SET_META_CONTEXT needs structured replies first",
            );
            return Ok(());
        }
        if set {
            self.meta_export = None;
        }
        let matched = codec::match_meta_queries(&request, set);
        let reply = codec::meta_context_payload(matched.context_id, BASE_ALLOCATION);
        for _ in 0..matched.replies {
            codec::option_reply(&mut self.out, option, REP_META_CONTEXT, &reply);
            // nbdkit answers a repeated query repeatedly: send as we go, not all at once.
            if self.out.len() >= STREAM_REPLIES_AT {
                self.flush()?;
            }
        }
        if matched.selects_base_allocation {
            self.meta_export = Some(request.export.to_owned());
        }
        codec::option_reply(&mut self.out, option, REP_ACK, &[]);
        Ok(())
    }
}
