//! Byte-level protocol tests with the raw client of `support.rs`.
//! Expected values are nbdkit 1.32.5's (checked against it).

use crate::support::nbd::*;
use crate::support::*;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const MAX_REQ: u32 = 64 << 20;

fn mem1m() -> Server {
    Server::start(&["memory", "size=1M"])
}

/// A brand-new client can still do I/O on `srv` (writes, then reads back).
#[track_caller]
fn fresh_client_works(srv: &Server, seed: u64) {
    let mut c = RawClient::open(&srv.sock, true, true);
    let data = pattern(seed, 4096);
    assert_eq!(c.write(8192, &data), 0);
    assert_eq!(c.read(8192, 4096).unwrap(), data);
    c.disconnect();
}

// --------------------------------------------------------------------------
// Handshake and options
// --------------------------------------------------------------------------

#[test]
fn greeting_and_flags() {
    let srv = mem1m();
    let mut c = RawClient::connect_no_greeting(&srv.sock);
    let g = c.read_n(18);
    assert_eq!(&g[0..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    assert_eq!(&g[16..18], &[0, 3], "handshake flags FIXED_NEWSTYLE|NO_ZEROES");

    // A client flag the server did not offer: connection dropped.
    let mut c = srv.raw();
    c.send_cflags(7);
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "unknown client flag must close the connection"
    );
    fresh_client_works(&srv, 1);
}

#[test]
fn opt_list_once_then_invalid() {
    let srv = mem1m();
    let mut c = RawClient::connect_fixed(&srv.sock);
    let r = c.option(OPT_LIST, &[]);
    assert_eq!(r.len(), 2, "one export then ACK: {r:?}");
    assert_eq!(r[0].typ, REP_SERVER);
    assert!(r[0].data.len() >= 4);
    assert_eq!(be32_of(&r[0].data), 0, "default export name is \"\"");
    assert_eq!(r[1].typ, REP_ACK);
    assert!(r[1].data.is_empty());

    let r = c.option(OPT_LIST, &[]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].typ, REP_ERR_INVALID, "second LIST on a connection is ERR_INVALID");

    // LIST with data is invalid too (fresh connection).
    let mut d = RawClient::connect_fixed(&srv.sock);
    let r = d.option(OPT_LIST, b"junk");
    assert_eq!(r.last().unwrap().typ, REP_ERR_INVALID);

    // Negotiation goes on.
    c.go("", &[]).expect("GO after LIST");
    assert_eq!(c.size, MIB);
    assert_eq!(c.read(0, 512).unwrap(), vec![0u8; 512]);
}

#[test]
fn unknown_option_is_unsup_and_skipped() {
    let srv = mem1m();
    let mut c = RawClient::connect_fixed(&srv.sock);
    let r = c.option(99, b"0123456789");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].typ, REP_ERR_UNSUP);
    // Data was consumed: the next option parses.
    let r = c.option(OPT_LIST, &[]);
    assert_eq!(r.last().unwrap().typ, REP_ACK);
    // PEEK_EXPORT (withdrawn) is unknown as well.
    let r = c.option(4, &[]);
    assert_eq!(r[0].typ, REP_ERR_UNSUP);
    c.go("", &[]).unwrap();
    assert_eq!(c.read(0, 512).unwrap().len(), 512);
}

#[test]
fn starttls_refused_connection_goes_on() {
    let srv = mem1m();
    let mut c = RawClient::connect_fixed(&srv.sock);
    let r = c.option(OPT_STARTTLS, &[]);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].typ == REP_ERR_UNSUP || r[0].typ == REP_ERR_POLICY,
        "STARTTLS without TLS must be ERR_UNSUP or ERR_POLICY, got {:#x}",
        r[0].typ
    );
    let r = c.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(r[0].typ, REP_ACK);
    c.sr = true;
    c.go("", &[]).unwrap();
    assert_eq!(c.read(0, 4096).unwrap(), vec![0u8; 4096]);
}

#[test]
fn opt_abort_acks() {
    let srv = mem1m();
    let mut c = RawClient::connect_fixed(&srv.sock);
    let r = c.option(OPT_ABORT, &[]);
    assert_eq!(r[0].typ, REP_ACK);
    assert!(c.closed_within(Duration::from_secs(10)));
    fresh_client_works(&srv, 2);
}

#[test]
fn info_then_go_same_answers() {
    let srv = mem1m();
    let mut c = RawClient::connect_fixed(&srv.sock);
    let infos = [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE];
    let info = c.info_or_go(OPT_INFO, "", &infos);
    assert_eq!(info.last().unwrap().typ, REP_ACK, "{info:?}");
    assert_eq!(info[0].typ, REP_INFO);
    assert_eq!(be16_of(&info[0].data), INFO_EXPORT, "INFO_EXPORT comes first");
    assert_eq!(c.size, MIB);
    assert_eq!(c.eflags, 0x0d6d);
    let names: Vec<_> = info
        .iter()
        .filter(|r| r.typ == REP_INFO && be16_of(&r.data) == INFO_NAME)
        .collect();
    assert_eq!(names.len(), 1, "INFO_NAME requested: sent once");
    assert_eq!(names[0].data.len(), 2, "canonical name of the default export is \"\"");
    for r in &info {
        if r.typ == REP_INFO && be16_of(&r.data) == INFO_BLOCK_SIZE {
            assert_eq!(r.data.len(), 14);
            let (min, pref, max) = (be32_of(&r.data[2..]), be32_of(&r.data[6..]), be32_of(&r.data[10..]));
            assert!(min.is_power_of_two() && pref.is_power_of_two() && min <= pref && pref <= max);
        }
    }
    // Still haggling: GO with the same request answers the same.
    let go = c.go("", &infos).expect("GO after INFO");
    let strip = |v: &[OptReply]| v.iter().map(|r| (r.typ, r.data.clone())).collect::<Vec<_>>();
    assert_eq!(strip(&info), strip(&go), "INFO and GO must agree");
    // No padding after GO: transmission starts right away.
    assert_eq!(c.read(0, 512).unwrap(), vec![0u8; 512]);
}

#[test]
fn info_malformed_is_invalid_and_recoverable() {
    let srv = mem1m();
    let mut c = RawClient::connect_fixed(&srv.sock);
    // name_len larger than the option payload.
    let mut p = info_payload("", &[]);
    p[3] = 200;
    let r = c.option(OPT_INFO, &p);
    assert_eq!(r.last().unwrap().typ, REP_ERR_INVALID);
    // Too short.
    let r = c.option(OPT_GO, &[0, 0]);
    assert_eq!(r.last().unwrap().typ, REP_ERR_INVALID);
    // Wrong number of info items.
    let mut p = info_payload("", &[INFO_NAME]);
    p.push(0);
    let r = c.option(OPT_INFO, &p);
    assert_eq!(r.last().unwrap().typ, REP_ERR_INVALID);
    c.go("", &[]).unwrap();
    assert_eq!(c.read(0, 512).unwrap().len(), 512);
}

fn export_name(no_zeroes: bool) {
    let srv = mem1m();
    // Something distinctive to read back through the EXPORT_NAME connection.
    let mut w = RawClient::open(&srv.sock, false, false);
    assert_eq!(w.write(0, b"EXPORT-NAME-DATA"), 0);
    w.disconnect();

    let mut c = srv.raw();
    c.send_cflags(CFLAG_FIXED_NEWSTYLE | if no_zeroes { CFLAG_NO_ZEROES } else { 0 });
    c.send_option(OPT_EXPORT_NAME, b"");
    let n = if no_zeroes { 10 } else { 134 };
    let r = c.read_n(n);
    assert_eq!(be64_of(&r), MIB);
    assert_eq!(be16_of(&r[8..]), 0x0d6d);
    assert!(r[10..].iter().all(|&b| b == 0), "padding must be zeros");
    // The next bytes are transmission replies: any extra padding would break this.
    let d = c.read(0, 16).unwrap();
    assert_eq!(&d, b"EXPORT-NAME-DATA");
}

#[test]
fn export_name_with_padding() {
    export_name(false);
}

#[test]
fn export_name_no_zeroes() {
    export_name(true);
}

#[test]
fn non_fixed_newstyle_client() {
    let srv = mem1m();
    let mut c = srv.raw();
    c.send_cflags(0);
    // Only EXPORT_NAME is legal; nbdkit answers others with ERR_INVALID.
    let r = c.option(OPT_LIST, &[]);
    assert_eq!(r.last().unwrap().typ, REP_ERR_INVALID);
    c.send_option(OPT_EXPORT_NAME, b"");
    let r = c.read_n(134);
    assert_eq!(be64_of(&r), MIB);
    assert_eq!(c.read(0, 512).unwrap(), vec![0u8; 512]);
}

#[test]
fn eflags_memory_and_readonly() {
    let srv = mem1m();
    let c = RawClient::open(&srv.sock, false, false);
    assert_eq!(c.eflags, 0x0d6d, "memory rw without SR");
    let c = RawClient::open(&srv.sock, true, false);
    assert_eq!(c.eflags, 0x0ded, "memory rw with SR (adds SEND_DF)");
    // INFO before SR, GO after SR: flags may differ by SEND_DF.
    let mut c = RawClient::connect_fixed(&srv.sock);
    let r = c.info_or_go(OPT_INFO, "", &[]);
    assert_eq!(r.last().unwrap().typ, REP_ACK);
    assert_eq!(c.eflags, 0x0d6d);
    assert_eq!(c.option(OPT_STRUCTURED_REPLY, &[])[0].typ, REP_ACK);
    c.sr = true;
    c.go("", &[]).unwrap();
    assert_eq!(c.eflags, 0x0ded);

    let ro = Server::start(&["-r", "memory", "1M"]);
    let c = RawClient::open(&ro.sock, true, false);
    assert_eq!(c.eflags, 0x0587, "memory -r with SR");
    let c = RawClient::open(&ro.sock, false, false);
    assert_eq!(c.eflags, 0x0507, "memory -r without SR");
}

#[test]
fn eflags_example1() {
    let srv = Server::start(&["example1"]);
    let c = RawClient::open(&srv.sock, false, false);
    assert_eq!(c.size, 104_857_600);
    assert_eq!(c.eflags, TF_HAS_FLAGS | TF_READ_ONLY);
    let mut c = RawClient::open(&srv.sock, true, false);
    assert_eq!(c.eflags, TF_HAS_FLAGS | TF_READ_ONLY | TF_SEND_DF);
    let mbr = c.read(0, 512).unwrap();
    assert_eq!(&mbr[0x1b8..0x1bc], &[0xe1, 0x5b, 0x02, 0x00]);
    assert_eq!(mbr[0x1c2], 0x83);
    assert_eq!(&mbr[0x1fe..], &[0x55, 0xaa]);
    assert_eq!(c.write(0, &[1; 512]), EPERM);
}

#[test]
fn meta_contexts() {
    let srv = mem1m();
    let mut c = RawClient::connect_fixed(&srv.sock);
    // LIST is allowed before structured replies.
    let r = c.option(OPT_LIST_META_CONTEXT, &meta_payload("", &["base:allocation"]));
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].typ, REP_META_CONTEXT);
    assert_eq!(be32_of(&r[0].data), 0, "LIST replies use context id 0");
    assert_eq!(&r[0].data[4..], b"base:allocation");
    assert_eq!(r[1].typ, REP_ACK);
    // SET before structured replies: invalid.
    let r = c.option(OPT_SET_META_CONTEXT, &meta_payload("", &["base:allocation"]));
    assert_eq!(r.last().unwrap().typ, REP_ERR_INVALID);

    assert_eq!(c.option(OPT_STRUCTURED_REPLY, &[])[0].typ, REP_ACK);
    c.sr = true;
    // LIST with no queries lists everything, i.e. base:allocation.
    let r = c.option(OPT_LIST_META_CONTEXT, &meta_payload("", &[]));
    assert_eq!(r.last().unwrap().typ, REP_ACK);
    assert!(
        r.iter()
            .any(|x| x.typ == REP_META_CONTEXT && &x.data[4..] == b"base:allocation"),
        "{r:?}"
    );
    // Unknown namespaces are ignored, not errors.
    let r = c.option(OPT_SET_META_CONTEXT, &meta_payload("", &["x-nosuch:thing"]));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].typ, REP_ACK);
    // Malformed: query length overruns the payload.
    let mut p = meta_payload("", &["base:allocation"]);
    let n = p.len();
    p[n - 16] = 0x7f;
    let r = c.option(OPT_SET_META_CONTEXT, &p);
    assert_eq!(r.last().unwrap().typ, REP_ERR_INVALID);
    // Select base:allocation: id 1.
    let r = c.option(OPT_SET_META_CONTEXT, &meta_payload("", &["base:allocation"]));
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].typ, REP_META_CONTEXT);
    assert_eq!(be32_of(&r[0].data), 1);
    assert_eq!(&r[0].data[4..], b"base:allocation");
    assert_eq!(r[1].typ, REP_ACK);
    c.go("", &[]).unwrap();
    let (id, d) = c.block_status(0, MIB as u32, 0).unwrap();
    assert_eq!(id, 1);
    assert_eq!(d, vec![(MIB as u32, 3)], "fresh memory disk is one hole");
}

// --------------------------------------------------------------------------
// Request validation (doc §2.12) — exact errno
// --------------------------------------------------------------------------

#[test]
fn validation_read_only_eperm_first() {
    let srv = Server::start(&["-r", "memory", "1M"]);
    let mut c = RawClient::open(&srv.sock, true, true);
    assert_eq!(c.write(0, &[1; 512]), EPERM);
    assert_eq!(c.write(MIB - 256, &[1; 512]), EPERM, "read-only wins over out of range");
    assert_eq!(c.write(2 * MIB, &[]), EPERM, "read-only wins over zero length");
    assert_eq!(c.cmd(CMD_TRIM, 0, 0, 4096), EPERM);
    assert_eq!(c.cmd(CMD_TRIM, 0, 4 * MIB, 4096), EPERM);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 0, 4096), EPERM);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 4 * MIB, 0), EPERM);
    // Allowed on read-only exports.
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0), 0);
    assert_eq!(c.cmd(CMD_CACHE, 0, 0, 4096), 0);
    assert_eq!(c.read(0, 512).unwrap(), vec![0u8; 512]);
    assert!(c.block_status(0, 4096, 0).is_ok());
}

#[test]
fn validation_out_of_range() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    let straddle = MIB - 512;
    assert_eq!(c.write(straddle, &[1; 1024]), ENOSPC);
    assert_eq!(c.write(MIB, &[1; 512]), ENOSPC);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, straddle, 1024), ENOSPC);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 8 * MIB, 1), ENOSPC);
    assert_eq!(c.read(straddle, 1024), Err(EINVAL));
    assert_eq!(c.read(MIB, 1), Err(EINVAL));
    assert_eq!(c.read(u64::MAX - 100, 512), Err(EINVAL), "offset+length overflow");
    assert_eq!(c.read(1 << 63, 512), Err(EINVAL));
    assert_eq!(c.cmd(CMD_TRIM, 0, straddle, 1024), EINVAL);
    assert_eq!(c.cmd(CMD_CACHE, 0, straddle, 1024), EINVAL);
    assert_eq!(c.block_status(straddle, 1024, 0), Err(EINVAL));
    assert_eq!(c.block_status(u64::MAX - 1, 4096, 0), Err(EINVAL));
    // No partial effect of the rejected straddling write.
    assert_eq!(c.read(straddle, 512).unwrap(), vec![0u8; 512]);
    // Exactly up to the end is fine.
    assert_eq!(c.write(straddle, &[7; 512]), 0);
    assert_eq!(c.read(straddle, 512).unwrap(), vec![7u8; 512]);
}

#[test]
fn validation_zero_length() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    assert_eq!(c.read(0, 0), Err(EINVAL));
    assert_eq!(c.write(0, &[]), ENOSPC);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 0, 0), ENOSPC);
    assert_eq!(c.cmd(CMD_TRIM, 0, 0, 0), EINVAL);
    assert_eq!(c.cmd(CMD_CACHE, 0, 0, 0), EINVAL);
    assert_eq!(c.block_status(0, 0, 0), Err(EINVAL));
    // Still in sync.
    assert_eq!(c.read(0, 512).unwrap().len(), 512);
}

#[test]
fn validation_flush_unknown_commands_and_flags() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0), 0);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 1, 0), EINVAL, "FLUSH with offset");
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 512), EINVAL, "FLUSH with length");
    for typ in [8u16, 9, 200, 0xffff] {
        assert_eq!(c.cmd(typ, 0, 0, 512), EINVAL, "unknown command {typ}");
    }
    // Unknown flag bits.
    for bit in [5u16, 7, 15] {
        assert_eq!(c.read_flags(0, 512, 1 << bit), Err(EINVAL), "READ with flag bit {bit}");
    }
    assert_eq!(
        c.request(1 << 9, CMD_WRITE, 0, 512, &[1; 512]).error,
        EINVAL,
        "WRITE with unknown flag"
    );
    // Flags on the wrong command.
    assert_eq!(c.request(CMD_FLAG_NO_HOLE, CMD_WRITE, 0, 512, &[1; 512]).error, EINVAL);
    assert_eq!(c.request(CMD_FLAG_DF, CMD_WRITE, 0, 512, &[1; 512]).error, EINVAL);
    assert_eq!(c.read_flags(0, 512, CMD_FLAG_REQ_ONE), Err(EINVAL));
    assert_eq!(c.read_flags(0, 512, CMD_FLAG_NO_HOLE), Err(EINVAL));
    assert_eq!(c.cmd(CMD_TRIM, CMD_FLAG_FAST_ZERO, 0, 512), EINVAL);
    assert_eq!(c.cmd(CMD_CACHE, CMD_FLAG_DF, 0, 512), EINVAL);
    // The rejected writes did not write.
    assert_eq!(c.read(0, 512).unwrap(), vec![0u8; 512]);
    // Accepted: FUA anywhere (advertised), DF on READ with SR.
    assert_eq!(c.read_flags(0, 512, CMD_FLAG_FUA), Ok(vec![0u8; 512]));
    assert_eq!(c.request(CMD_FLAG_FUA, CMD_WRITE, 0, 512, &[9; 512]).error, 0);
    assert_eq!(c.cmd(CMD_FLUSH, CMD_FLAG_FUA, 0, 0), 0);
    assert_eq!(c.cmd(CMD_TRIM, CMD_FLAG_FUA, 4096, 4096), 0);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE | CMD_FLAG_FUA, 8192, 4096), 0);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 8192, 4096), 0);
    let r = c.request(CMD_FLAG_DF, CMD_READ, 0, 512, &[]);
    assert_eq!(r.error, 0);
    assert_eq!(r.data, vec![9u8; 512]);
    assert_eq!(r.chunks.len(), 1, "DF read: one content chunk");
    assert!(c.block_status(0, 4096, CMD_FLAG_REQ_ONE).is_ok());
}

#[test]
fn validation_df_and_block_status_need_negotiation() {
    let srv = mem1m();
    // No structured replies at all.
    let mut c = RawClient::open(&srv.sock, false, false);
    assert_eq!(c.eflags & TF_SEND_DF, 0);
    assert_eq!(c.read_flags(0, 512, CMD_FLAG_DF), Err(EINVAL), "DF without SR");
    let r = c.request(0, CMD_BLOCK_STATUS, 0, 4096, &[]);
    assert!(r.simple);
    assert_eq!(r.error, EINVAL, "BLOCK_STATUS without SR");
    assert_eq!(c.read(0, 512).unwrap().len(), 512, "simple READ still works");
    // SR but no context selected.
    let mut c = RawClient::open(&srv.sock, true, false);
    assert_eq!(
        c.block_status(0, 4096, 0),
        Err(EINVAL),
        "BLOCK_STATUS without meta context"
    );
    // Selection made for another export name is dropped at GO.
    let mut c = RawClient::connect_fixed(&srv.sock);
    assert_eq!(c.option(OPT_STRUCTURED_REPLY, &[])[0].typ, REP_ACK);
    c.sr = true;
    let r = c.option(OPT_SET_META_CONTEXT, &meta_payload("other", &["base:allocation"]));
    assert_eq!(r.last().unwrap().typ, REP_ACK);
    c.go("", &[]).unwrap();
    assert_eq!(c.block_status(0, 4096, 0), Err(EINVAL));
}

#[test]
fn validation_oversized_requests_enomem() {
    let srv = Server::start(&["memory", "8G"]);
    let mut c = RawClient::open(&srv.sock, true, true);
    assert_eq!(c.write(0, b"head"), 0);
    assert_eq!(c.read(0, MAX_REQ + 1), Err(ENOMEM), "READ > 64 MiB");
    // Exactly 64 MiB is fine.
    let d = c.read(0, MAX_REQ).unwrap();
    assert_eq!(&d[..4], b"head");
    assert!(d[4..].iter().all(|&b| b == 0));
    drop(d);
    // WRITE > 64 MiB: error, payload drained, connection still in sync.
    let big = vec![0xeeu8; MAX_REQ as usize + 1];
    assert_eq!(c.write(4096, &big), ENOMEM, "WRITE > 64 MiB");
    drop(big);
    assert_eq!(c.read(0, 8192).unwrap()[..4], *b"head");
    assert_eq!(
        c.read(4096, 4096).unwrap(),
        vec![0u8; 4096],
        "rejected write must not be applied"
    );
    // Payload-free commands may use the full 32-bit length.
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 0, u32::MAX), 0);
    assert_eq!(c.cmd(CMD_TRIM, 0, 0, u32::MAX), 0);
    assert_eq!(c.cmd(CMD_CACHE, 0, 0, u32::MAX), 0);
    assert_eq!(c.read(0, 4).unwrap(), vec![0u8; 4]);
    fresh_client_works(&srv, 3);
}

#[test]
fn oversized_write_simple_replies() {
    // Same drain rule without structured replies.
    let srv = Server::start(&["memory", "128M"]);
    let mut c = RawClient::open(&srv.sock, false, false);
    let big = vec![1u8; MAX_REQ as usize + 4096];
    assert_eq!(c.write(0, &big), ENOMEM);
    assert_eq!(c.read(0, 512).unwrap(), vec![0u8; 512]);
    assert_eq!(c.read(0, MAX_REQ + 1), Err(ENOMEM));
    assert_eq!(c.write(0, &[2; 512]), 0);
    assert_eq!(c.read(0, 512).unwrap(), vec![2u8; 512]);
}

// --------------------------------------------------------------------------
// Structured replies
// --------------------------------------------------------------------------

#[test]
fn structured_read_one_data_chunk() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    let data = pattern(11, 8192);
    assert_eq!(c.write(4096, &data), 0);
    let r = c.request(0, CMD_READ, 4096, 8192, &[]);
    assert_eq!(r.error, 0);
    assert!(!r.simple);
    assert_eq!(
        r.chunks.len(),
        1,
        "one chunk: {:?}",
        r.chunks.iter().map(|c| c.typ).collect::<Vec<_>>()
    );
    let ch = &r.chunks[0];
    assert_eq!(ch.typ, CHUNK_OFFSET_DATA);
    assert_eq!(ch.flags, REPLY_FLAG_DONE);
    assert_eq!(be64_of(&ch.payload), 4096);
    assert_eq!(&ch.payload[8..], &data[..]);
    // Non-READ commands: simple reply or a single chunk, both fine; must succeed.
    let r = c.request(0, CMD_WRITE, 0, 4, b"abcd");
    assert_eq!(r.error, 0);
}

#[test]
fn structured_read_error_chunk() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    let r = c.request(0, CMD_READ, MIB, 512, &[]);
    assert!(!r.simple, "READ errors must be structured once SR is on");
    assert_eq!(r.error, EINVAL);
    assert_eq!(r.chunks.len(), 1);
    let ch = &r.chunks[0];
    assert_eq!(ch.typ, CHUNK_ERROR);
    assert_eq!(ch.flags & REPLY_FLAG_DONE, REPLY_FLAG_DONE);
    assert_eq!(be32_of(&ch.payload), EINVAL);
    // BLOCK_STATUS errors likewise.
    let r = c.request(0, CMD_BLOCK_STATUS, MIB, 512, &[]);
    assert_eq!(r.error, EINVAL);
}

#[test]
fn block_status_page_granularity() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    assert_eq!(c.write(0, &[1, 2, 3, 4]), 0);
    let (id, d) = c.block_status(0, MIB as u32, 0).unwrap();
    assert_eq!(id, 1);
    assert_eq!(d, vec![(32768, 0), (1_015_808, 3)]);
    let (_, d) = c.block_status(0, 4096, CMD_FLAG_REQ_ONE).unwrap();
    assert_eq!(d, vec![(4096, 0)], "REQ_ONE clamps to the request");
    // Descriptors never stop short of the request.
    let (_, d) = c.block_status(4096, 65536, 0).unwrap();
    let total: u64 = d.iter().map(|x| x.0 as u64).sum();
    assert!(total >= 65536, "{d:?}");
    // Rest of the allocated page: not a hole (nbdkit also flags it ZERO, as
    // those bytes are zero; both are correct).
    assert_eq!(d[0].0, 32768 - 4096, "{d:?}");
    assert_eq!(d[0].1 & 1, 0, "{d:?}");
    // Trim the page back to a hole.
    assert_eq!(c.cmd(CMD_TRIM, 0, 0, 32768), 0);
    let (_, d) = c.block_status(0, MIB as u32, 0).unwrap();
    assert_eq!(d, vec![(MIB as u32, 3)]);
}

// --------------------------------------------------------------------------
// Pipelining and sharing
// --------------------------------------------------------------------------

#[test]
fn pipelined_32_requests() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    // Pre-fill the read region synchronously.
    for i in 0..16u64 {
        assert_eq!(c.write(512 * 1024 + i * 4096, &pattern(100 + i, 4096)), 0);
    }
    let mut expect = std::collections::HashMap::new();
    for i in 0..32u64 {
        let cookie = 0xC0DE_0000_0000_0000 | (i * 7919);
        if i % 2 == 0 {
            let k = i / 2;
            c.send_request_cookie(cookie, 0, CMD_WRITE, k * 4096, 4096, &pattern(200 + k, 4096));
            expect.insert(cookie, None);
        } else {
            let k = i / 2;
            c.send_request_cookie(cookie, 0, CMD_READ, 512 * 1024 + k * 4096, 4096, &[]);
            expect.insert(cookie, Some(pattern(100 + k, 4096)));
        }
    }
    for _ in 0..32 {
        let r = c.next_reply();
        let e = expect
            .remove(&r.cookie)
            .unwrap_or_else(|| panic!("unexpected/duplicate cookie {:#x}", r.cookie));
        assert_eq!(r.error, 0);
        if let Some(d) = e {
            assert!(r.data == d, "READ data mismatch for cookie {:#x}", r.cookie);
        }
    }
    assert!(expect.is_empty());
    for k in 0..16u64 {
        assert_eq!(c.read(k * 4096, 4096).unwrap(), pattern(200 + k, 4096));
    }
}

#[test]
fn memory_shared_between_connections() {
    let srv = mem1m();
    let mut a = RawClient::open(&srv.sock, true, true);
    let mut b = RawClient::open(&srv.sock, false, false);
    let d = pattern(5, 65536);
    assert_eq!(a.write(65536, &d), 0);
    assert_eq!(a.cmd(CMD_FLUSH, 0, 0, 0), 0);
    assert_eq!(b.read(65536, 65536).unwrap(), d);
    a.disconnect();
    let mut c = RawClient::open(&srv.sock, true, false);
    assert_eq!(c.read(65536, 65536).unwrap(), d);
}

#[test]
fn basic_commands_roundtrip() {
    let srv = mem1m();
    let mut c = RawClient::open(&srv.sock, true, true);
    let d = pattern(9, 3 * 4096);
    assert_eq!(c.write(100, &d), 0, "unaligned write");
    assert_eq!(c.read(100, d.len() as u32).unwrap(), d);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 100 + 4096, 4096), 0);
    let got = c.read(100, d.len() as u32).unwrap();
    assert_eq!(&got[..4096], &d[..4096]);
    assert!(got[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(&got[8192..], &d[8192..]);
    assert_eq!(c.cmd(CMD_CACHE, 0, 0, 65536), 0);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0), 0);
    // Last byte of the disk.
    assert_eq!(c.write(MIB - 1, &[0x5a]), 0);
    assert_eq!(c.read(MIB - 1, 1).unwrap(), vec![0x5a]);
    // DISC: no reply, connection closes.
    c.send_request(0, CMD_DISC, 0, 0, &[]);
    assert!(c.closed_within(Duration::from_secs(10)));
}

// --------------------------------------------------------------------------
// Garbage: only the offending connection ends
// --------------------------------------------------------------------------

#[test]
fn garbage_instead_of_handshake() {
    let srv = mem1m();
    let mut w = RawClient::open(&srv.sock, false, false);
    assert_eq!(w.write(0, b"survives"), 0);

    let mut c = srv.raw();
    c.write_raw(&pattern(77, 300));
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "random handshake bytes must end the connection"
    );

    // Garbage without even reading the greeting.
    let mut c = RawClient::connect_no_greeting(&srv.sock);
    c.write_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.closed_within(Duration::from_secs(10)));

    // Bad option magic.
    let mut c = RawClient::connect_fixed(&srv.sock);
    c.write_raw(b"IHAVEOPX\x00\x00\x00\x03\x00\x00\x00\x00");
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "option without IHAVEOPT must end the connection"
    );

    // Truncated option then EOF.
    let mut c = RawClient::connect_fixed(&srv.sock);
    c.write_raw(b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x01\x00abc");
    let _ = c.s.shutdown(std::net::Shutdown::Write);
    assert!(c.closed_within(Duration::from_secs(10)));

    // Connect and go away immediately.
    drop(RawClient::connect_no_greeting(&srv.sock));

    // The earlier connection and new ones are unaffected.
    assert_eq!(w.read(0, 8).unwrap(), b"survives");
    fresh_client_works(&srv, 4);
}

#[test]
fn garbage_in_transmission() {
    let mut srv = mem1m();
    let mut w = RawClient::open(&srv.sock, true, true);
    assert_eq!(w.write(0, b"still-here"), 0);

    // Bad request magic.
    let mut c = RawClient::open(&srv.sock, true, true);
    let mut req = vec![0x12, 0x34, 0x56, 0x78];
    req.extend_from_slice(&[0u8; 24]);
    c.write_raw(&req);
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "bad request magic must end the connection"
    );

    // Truncated header, then EOF.
    let mut c = RawClient::open(&srv.sock, false, false);
    c.write_raw(&[0x25, 0x60, 0x95, 0x13, 0, 0, 0, 0, 0, 0]);
    let _ = c.s.shutdown(std::net::Shutdown::Write);
    assert!(c.closed_within(Duration::from_secs(10)));

    // Truncated WRITE payload, then EOF.
    let mut c = RawClient::open(&srv.sock, false, false);
    let mut req = Vec::new();
    req.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    req.extend_from_slice(&[0, 0, 0, 1]);
    req.extend_from_slice(&[0u8; 8]);
    req.extend_from_slice(&0u64.to_be_bytes());
    req.extend_from_slice(&4096u32.to_be_bytes());
    req.extend_from_slice(&[0xff; 100]);
    c.write_raw(&req);
    let _ = c.s.shutdown(std::net::Shutdown::Write);
    assert!(c.closed_within(Duration::from_secs(10)));

    // Random bytes after GO.
    let mut c = RawClient::open(&srv.sock, true, false);
    c.write_raw(&pattern(78, 1000));
    let t = Instant::now();
    assert!(c.closed_within(Duration::from_secs(10)));
    assert!(t.elapsed() < Duration::from_secs(10));

    assert!(srv.alive(), "server must survive garbage");
    assert_eq!(w.read(0, 10).unwrap(), b"still-here");
    fresh_client_works(&srv, 6);
}

#[test]
fn oldstyle_greets_as_nbdkit_does_and_serves() {
    let greeting = |nbdkit: bool| {
        let dir = TempDir::new("oldstyle");
        let sock = dir.join("sock");
        let program = if nbdkit { tool("nbdkit") } else { bin() };
        let mut server = std::process::Command::new(program)
            .args(["-o", "-f", "-U", sock.to_str().unwrap(), "memory", "1M"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match std::os::unix::net::UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no server: {e}"),
            }
        };
        let mut bytes = vec![0; 152];
        std::io::Read::read_exact(&mut s, &mut bytes).unwrap();
        let _ = server.kill();
        let _ = server.wait();
        bytes
    };
    let ours = greeting(false);
    assert_eq!(ours, greeting(true), "the oldstyle greeting differs from nbdkit's");
    assert_eq!(&ours[..8], b"NBDMAGIC");
    let script = "qemu-io -f raw -c 'write -P 7 0 4k' -c 'read -P 7 0 4k' \"$nbd\" && nbdinfo \"$uri\"";
    let out = assert_success(&run_captive(&["-o", "memory", "1M"], script));
    assert!(out.contains("oldstyle"), "{out}");
    assert!(!out.contains("failed"), "{out}");
}

#[test]
fn an_export_needing_alignment_is_refused_to_clients_that_would_not_learn_it() {
    let srv = Server::start(&["--filter=blocksize-policy", "memory", "1M", "blocksize-minimum=4k"]);
    let mut c = RawClient::connect_fixed(&srv.sock);
    let refused = c.info_or_go(OPT_GO, "", &[]);
    assert_eq!(
        refused.last().unwrap().typ,
        0x8000_0008,
        "NBD_REP_ERR_BLOCK_SIZE_REQD: {refused:?}"
    );
    let replies = c.info_or_go(OPT_GO, "", &[INFO_BLOCK_SIZE]);
    assert_eq!(replies.last().unwrap().typ, REP_ACK);
    let sizes = replies
        .iter()
        .find(|r| r.typ == REP_INFO && be16_of(&r.data) == INFO_BLOCK_SIZE)
        .expect("NBD_INFO_BLOCK_SIZE");
    assert_eq!(be32_of(&sizes.data[2..]), 4096);
    assert_eq!(c.read(0, 4096), Ok(vec![0; 4096]));
    // 512-byte alignment is what every client keeps to: no need to ask.
    let srv = Server::start(&["--filter=blocksize-policy", "memory", "1M", "blocksize-minimum=512"]);
    let mut c = RawClient::connect_fixed(&srv.sock);
    assert_eq!(c.info_or_go(OPT_GO, "", &[]).last().unwrap().typ, REP_ACK);
}
