//! The fixed-newstyle handshake, as nbdkit drives it (doc §2.11): option by option until the
//! client picks an export (GO / EXPORT_NAME), aborts, or breaks the protocol.

use super::ServerConfig;
use crate::chain::Context;
use crate::log;
use crate::protocol::consts::*;
use crate::protocol::handshake::{self as codec, InvalidOption};
use crate::protocol::ProtocolError;
use std::io::{self, Read, Write};

/// The export a client chose, with what was negotiated on the way.
pub struct Negotiated {
    pub context: Context,
    pub structured_replies: bool,
    /// base:allocation was selected for this export by SET_META_CONTEXT.
    pub base_allocation: bool,
}

/// Why a handshake ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("too many options without choosing an export")]
    TooManyOptions,
    #[error("cannot open export '{0}': {1}")]
    ExportName(String, String),
}

struct Haggle<'a> {
    config: &'a ServerConfig,
    structured_replies: bool,
    /// The export name SET_META_CONTEXT selected base:allocation for.
    meta_export: Option<String>,
    listed: bool,
    options_left: usize,
    out: Vec<u8>,
}

pub fn negotiate(
    config: &ServerConfig,
    r: &mut impl Read,
    w: &mut impl Write,
) -> Result<Option<Negotiated>, HandshakeError> {
    let offered = (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) & config.handshake_mask;
    w.write_all(&codec::greeting(offered))?;
    let mut flags = [0; 4];
    r.read_exact(&mut flags)?;
    let client_flags = u32::from_be_bytes(flags);
    codec::check_client_flags(client_flags, offered)?;
    let fixed = client_flags & FLAG_C_FIXED_NEWSTYLE != 0;
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;

    let mut h = Haggle {
        config,
        structured_replies: false,
        meta_export: None,
        listed: false,
        options_left: MAX_OPTIONS,
        out: Vec::new(),
    };
    loop {
        if h.options_left == 0 {
            return Err(HandshakeError::TooManyOptions);
        }
        h.options_left -= 1;
        let mut header = [0; codec::OPTION_HEADER_LEN];
        r.read_exact(&mut header)?;
        let header = codec::parse_option_header(&header)?;
        let mut payload = vec![0; header.length as usize];
        r.read_exact(&mut payload)?;
        h.out.clear();
        let option = header.option;

        let outcome = if !fixed && option != OPT_EXPORT_NAME {
            h.error(option, REP_ERR_INVALID, "fixed newstyle was not negotiated");
            None
        } else {
            match option {
                OPT_EXPORT_NAME => {
                    let name = codec::parse_export_name(&payload)?;
                    let context = config
                        .chain
                        .open(config.readonly, name)
                        .map_err(|e| HandshakeError::ExportName(name.to_owned(), e))?;
                    codec::export_name_reply(
                        &mut h.out,
                        context.size,
                        context.eflags(h.structured_replies),
                        no_zeroes,
                    );
                    Some(Some(h.negotiated(context, name)))
                }
                OPT_ABORT => {
                    codec::option_reply(&mut h.out, option, REP_ACK, &[]);
                    // The client may close without reading the ACK.
                    let _ = w.write_all(&h.out);
                    return Ok(None);
                }
                OPT_LIST => {
                    h.list(option, &payload);
                    None
                }
                OPT_STARTTLS if !payload.is_empty() => {
                    h.error(option, REP_ERR_INVALID, "STARTTLS takes no data");
                    None
                }
                OPT_STARTTLS => {
                    h.error(option, REP_ERR_POLICY, "TLS is not enabled on this server");
                    None
                }
                OPT_INFO | OPT_GO => h.info_or_go(option, &payload).map(Some),
                OPT_STRUCTURED_REPLY if !payload.is_empty() => {
                    h.error(option, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
                    None
                }
                OPT_STRUCTURED_REPLY if config.no_structured_replies => {
                    h.error(option, REP_ERR_UNSUP, "structured replies are disabled (--no-sr)");
                    None
                }
                OPT_STRUCTURED_REPLY => {
                    h.structured_replies = true;
                    codec::option_reply(&mut h.out, option, REP_ACK, &[]);
                    None
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    h.meta_context(option, &payload);
                    None
                }
                _ => {
                    h.error(option, REP_ERR_UNSUP, "unsupported option");
                    None
                }
            }
        };
        w.write_all(&h.out)?;
        if let Some(chosen) = outcome {
            return Ok(chosen);
        }
    }
}

impl Haggle<'_> {
    fn error(&mut self, option: u32, reply: u32, message: &str) {
        codec::option_reply(&mut self.out, option, reply, message.as_bytes());
    }

    fn negotiated(&self, context: Context, name: &str) -> Negotiated {
        Negotiated {
            context,
            structured_replies: self.structured_replies,
            base_allocation: self.meta_export.as_deref() == Some(name),
        }
    }

    fn list(&mut self, option: u32, payload: &[u8]) {
        if !payload.is_empty() {
            return self.error(option, REP_ERR_INVALID, "LIST takes no data");
        }
        if self.listed {
            return self.error(option, REP_ERR_INVALID, "LIST may be sent only once");
        }
        self.listed = true;
        match self.config.chain.list_exports(self.config.readonly) {
            Ok(exports) => {
                for export in &exports {
                    let payload = codec::rep_server_payload(&export.name, export.description.as_deref());
                    codec::option_reply(&mut self.out, option, REP_SERVER, &payload);
                }
                self.options_left += MAX_OPTIONS * exports.len();
                codec::option_reply(&mut self.out, option, REP_ACK, &[]);
            }
            Err(_) => self.error(option, REP_ERR_PLATFORM, "listing exports failed"),
        }
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
        let context = match self.config.chain.open(self.config.readonly, request.name) {
            Ok(context) => context,
            Err(why) => {
                log::error!("cannot open export '{}': {why}", request.name);
                self.error(option, REP_ERR_UNKNOWN, &why);
                return None;
            }
        };
        let export = codec::info_export_payload(context.size, context.eflags(self.structured_replies));
        codec::option_reply(&mut self.out, option, REP_INFO, &export);
        for &info in &request.info_types {
            match info {
                INFO_NAME => {
                    codec::option_reply(&mut self.out, option, REP_INFO, &codec::info_name_payload(request.name))
                }
                INFO_DESCRIPTION => {
                    if let Some(description) = context.export_description() {
                        codec::option_reply(
                            &mut self.out,
                            option,
                            REP_INFO,
                            &codec::info_description_payload(&description),
                        );
                    }
                }
                INFO_BLOCK_SIZE => {
                    if let Some(b) = context.block_size {
                        let payload = codec::info_block_size_payload(b.minimum, b.preferred, b.maximum);
                        codec::option_reply(&mut self.out, option, REP_INFO, &payload);
                    }
                }
                // INFO_EXPORT is always sent; unknown requests are ignored.
                _ => {}
            }
        }
        codec::option_reply(&mut self.out, option, REP_ACK, &[]);
        (option == OPT_GO).then(|| self.negotiated(context, request.name))
    }

    fn meta_context(&mut self, option: u32, payload: &[u8]) {
        let set = option == OPT_SET_META_CONTEXT;
        let request = match codec::parse_meta_request(payload) {
            Ok(request) => request,
            Err(InvalidOption(why)) => return self.error(option, REP_ERR_INVALID, why),
        };
        if set && !self.structured_replies {
            return self.error(
                option,
                REP_ERR_INVALID,
                "SET_META_CONTEXT needs structured replies first",
            );
        }
        if set {
            self.meta_export = None;
        }
        let matched = codec::match_meta_queries(&request.queries, set);
        let reply = codec::meta_context_payload(matched.context_id, BASE_ALLOCATION);
        for _ in 0..matched.replies {
            codec::option_reply(&mut self.out, option, REP_META_CONTEXT, &reply);
        }
        if matched.selects_base_allocation {
            self.meta_export = Some(request.export.to_owned());
        }
        codec::option_reply(&mut self.out, option, REP_ACK, &[]);
    }
}
