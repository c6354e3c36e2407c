//! Numeric constants of the NBD wire protocol, plus the limits nbdkit applies.
//!
//! Names follow the NBD specification with the `NBD_` prefix dropped (the module path
//! already says it). Widths match the wire field each constant travels in.

// Magic numbers.

/// First 8 bytes of every handshake ("NBDMAGIC").
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// Second word of the newstyle greeting and prefix of every client option ("IHAVEOPT").
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Second word of the oldstyle greeting.
pub const OLD_VERSION: u64 = 0x0000_4202_8186_1253;
/// Prefix of every fixed-newstyle option reply.
pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every compact (28-byte) request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of an extended (32-byte) request; experimental, not negotiated by nbdkit.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Prefix of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefix of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Prefix of an extended reply chunk; experimental, not negotiated by nbdkit.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

// Handshake flags (server, 16 bits) and client flags (32 bits).

pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
/// Withdrawn from the spec; answered like any unknown option.
pub const OPT_PEEK_EXPORT: u32 = 4;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// Experimental; nbdkit answers it with `REP_ERR_UNSUP`.
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types. Errors have bit 31 set.

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
const REP_ERR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
pub const REP_ERR_POLICY: u32 = REP_ERR | 2;
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
pub const REP_ERR_PLATFORM: u32 = REP_ERR | 4;
pub const REP_ERR_TLS_REQD: u32 = REP_ERR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR | 7;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_ERR | 8;
pub const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;
pub const REP_ERR_EXT_HEADER_REQD: u32 = REP_ERR | 10;

// Information items inside `REP_INFO`.

pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission (export) flags.

pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const FLAG_SEND_RESIZE: u16 = 1 << 9;
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;
pub const FLAG_BLOCK_STATUS_PAYLOAD: u16 = 1 << 12;

// Commands.

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
/// Experimental; nbdkit treats it as an unknown command.
pub const CMD_RESIZE: u16 = 8;

// Command flags.

pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
/// Extended headers only; outside the set nbdkit accepts.
pub const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

// Structured reply flags and chunk types. Error chunk types have bit 15 set.

pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
const REPLY_TYPE_ERR: u16 = 1 << 15;
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERR | 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERR | 2;

// `base:allocation` status flags.

pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

// Error values carried in replies.

pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

// Metadata contexts.

/// The only metadata context served.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The `LIST_META_CONTEXT` wildcard for every context in the `base` namespace.
pub const BASE_NAMESPACE_QUERY: &str = "base:";
/// Context id in `LIST_META_CONTEXT` replies (the spec recommends 0 there).
pub const LIST_CONTEXT_ID: u32 = 0;
/// Context id nbdkit assigns to a selected `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

// Limits nbdkit applies.

/// Longest string (export name, description, query) accepted or sent.
pub const MAX_STRING: usize = 4096;
/// Largest READ/WRITE; longer ones fail with ENOMEM.
pub const MAX_REQUEST_SIZE: u32 = 64 * 1024 * 1024;
/// Largest option payload; longer ones end the connection.
pub const MAX_OPTION_LEN: u32 = 64 * 1024 * 1024;
/// Largest rejected WRITE payload still read and discarded; longer ones end the connection.
pub const MAX_WRITE_DRAIN: u32 = 2 * MAX_REQUEST_SIZE;
/// Options accepted before an export is chosen (grows after a successful `OPT_LIST`).
pub const MAX_OPTIONS: usize = 32;
/// Zero padding after the `OPT_EXPORT_NAME` reply unless both sides agreed on NO_ZEROES.
pub const EXPORT_NAME_PADDING: usize = 124;
