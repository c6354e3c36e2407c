//! Writes the seed corpus: `seeds DIR` fills DIR/server with small valid (and a few broken)
//! client sessions, and DIR/codec with one input per codec property. The files are kept in
//! the repository (fuzz/corpus); run this again after changing a seed.

use nbdbox_fuzz::client::*;
use std::path::Path;

/// The exports the server target serves are 1 MiB.
const DISK: u64 = 1 << 20;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).expect("usage: seeds DIR");
    let dir = Path::new(&dir);
    for (target, seeds) in [("server", server_seeds()), ("codec", codec_seeds())] {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        for (name, bytes) in seeds {
            std::fs::write(target_dir.join(name), bytes)?;
        }
    }
    Ok(())
}

/// 512 bytes that are not all one value, so reads after writes show something.
fn sector(seed: u8) -> Vec<u8> {
    (0..512u16)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn newstyle() -> Session {
    Session::new(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)
}

/// Every command once, with simple replies.
fn commands(session: Session) -> Session {
    session
        .request(0, CMD_WRITE, 4096, 512, &sector(1))
        .request(0, CMD_READ, 4096, 512, &[])
        .request(FLAG_FUA, CMD_WRITE, DISK - 512, 512, &sector(2))
        .request(0, CMD_FLUSH, 0, 0, &[])
        .request(0, CMD_TRIM, 0, 8192, &[])
        .request(0, CMD_WRITE_ZEROES, 8192, 4096, &[])
        .request(0, CMD_CACHE, 0, 65536, &[])
        .request(0, CMD_READ, 0, 8192, &[])
}

fn server_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let go_default = info_payload(b"", &[]);
    let base_allocation = meta_payload(b"", &[b"base:allocation"]);
    vec![
        (
            "go-simple",
            commands(newstyle().option(OPT_GO, &go_default))
                .request(0, CMD_DISC, 0, 0, &[])
                .into_bytes(),
        ),
        (
            "go-structured",
            newstyle()
                .option(OPT_STRUCTURED_REPLY, &[])
                .option(OPT_SET_META_CONTEXT, &base_allocation)
                .option(
                    OPT_GO,
                    &info_payload(b"", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]),
                )
                .request(0, CMD_WRITE, 65536, 512, &sector(3))
                .request(0, CMD_BLOCK_STATUS, 0, DISK as u32, &[])
                .request(FLAG_REQ_ONE, CMD_BLOCK_STATUS, 65536, 4096, &[])
                .request(FLAG_DF, CMD_READ, 65536, 1024, &[])
                .request(FLAG_FAST_ZERO | FLAG_NO_HOLE, CMD_WRITE_ZEROES, 0, 4096, &[])
                .request(FLAG_FUA, CMD_TRIM, 65536, 512, &[])
                .request(0, CMD_FLUSH, 0, 0, &[])
                .request(0, CMD_DISC, 0, 0, &[])
                .into_bytes(),
        ),
        (
            "structured-commands",
            commands(newstyle().option(OPT_STRUCTURED_REPLY, &[]).option(OPT_GO, &go_default)).into_bytes(),
        ),
        (
            "list-info-meta-go",
            newstyle()
                .option(OPT_LIST, &[])
                .option(OPT_INFO, &info_payload(b"", &[INFO_EXPORT, INFO_NAME]))
                .option(OPT_LIST_META_CONTEXT, &meta_payload(b"", &[]))
                .option(
                    OPT_LIST_META_CONTEXT,
                    &meta_payload(b"", &[b"base:", b"base:allocation", b"x:y"]),
                )
                .option(OPT_STRUCTURED_REPLY, &[])
                .option(OPT_SET_META_CONTEXT, &base_allocation)
                .option(OPT_GO, &info_payload(b"", &[]))
                .request(0, CMD_BLOCK_STATUS, 0, 4096, &[])
                .request(0, CMD_DISC, 0, 0, &[])
                .into_bytes(),
        ),
        (
            "export-name",
            commands(newstyle().option(OPT_EXPORT_NAME, b"")).into_bytes(),
        ),
        (
            "export-name-padded",
            Session::new(CLIENT_FIXED_NEWSTYLE)
                .option(OPT_STRUCTURED_REPLY, &[])
                .option(OPT_EXPORT_NAME, b"disk")
                .request(0, CMD_READ, 0, 512, &[])
                .request(0, CMD_DISC, 0, 0, &[])
                .into_bytes(),
        ),
        (
            // A client of the old, unfixed newstyle: EXPORT_NAME is all it may send.
            "unfixed-export-name",
            commands(Session::new(0).option(OPT_EXPORT_NAME, b"")).into_bytes(),
        ),
        (
            // Refused, ABORT included: such a client may only send EXPORT_NAME.
            "unfixed-options-refused",
            Session::new(CLIENT_NO_ZEROES)
                .option(OPT_ABORT, &[])
                .option(OPT_GO, &go_default)
                .option(OPT_EXPORT_NAME, b"")
                .request(0, CMD_READ, 0, 512, &[])
                .into_bytes(),
        ),
        (
            "abort",
            newstyle().option(OPT_LIST, &[]).option(OPT_ABORT, &[]).into_bytes(),
        ),
        (
            "option-errors",
            newstyle()
                .option(OPT_SET_META_CONTEXT, &base_allocation)
                .option(OPT_STARTTLS, &[])
                .option(OPT_STRUCTURED_REPLY, b"x")
                .option(OPT_LIST, b"x")
                .option(OPT_INFO, b"\x00\x00\x00\x05ab")
                .option(OPT_LIST_META_CONTEXT, b"\x00\x00\x00\x00\xff\xff\xff\xff")
                .option(42, b"unknown")
                .option(OPT_GO, &go_default)
                .request(0, CMD_DISC, 0, 0, &[])
                .into_bytes(),
        ),
        (
            "request-errors",
            newstyle()
                .option(OPT_GO, &go_default)
                .request(0, CMD_READ, DISK, 512, &[])
                .request(0, CMD_WRITE, DISK - 4, 8, b"12345678")
                .request(0, CMD_READ, 0, 0, &[])
                .request(1 << 7, CMD_READ, 0, 512, &[])
                .request(FLAG_DF, CMD_READ, 0, 512, &[])
                .request(0, CMD_BLOCK_STATUS, 0, 512, &[])
                .request(0, CMD_FLUSH, 1, 0, &[])
                .request(0, 8, 0, 0, &[])
                .request(0, 0x1234, 0, 512, &[])
                .request(0, CMD_READ, 0, 512, &[])
                .into_bytes(),
        ),
        (
            "pipelined",
            (0..24u64)
                .fold(newstyle().option(OPT_GO, &go_default), |session, i| {
                    let offset = (i % 8) * 4096;
                    if i % 3 == 0 {
                        session.request(0, CMD_WRITE, offset, 512, &sector(i as u8))
                    } else {
                        session.request(0, CMD_READ, offset, 512, &[])
                    }
                })
                .into_bytes(),
        ),
        (
            "bad-request-magic",
            newstyle()
                .option(OPT_GO, &go_default)
                .request(0, CMD_READ, 0, 512, &[])
                .raw(b"\x25\x60\x95\x14 not a request header")
                .into_bytes(),
        ),
        (
            "write-cut-short",
            newstyle()
                .option(OPT_GO, &go_default)
                .request(0, CMD_WRITE, 0, 4096, b"only a few bytes")
                .into_bytes(),
        ),
        (
            "option-cut-short",
            newstyle().raw(&option(OPT_GO, &go_default)[..20]).into_bytes(),
        ),
        (
            "extended-headers",
            newstyle()
                .option(OPT_EXTENDED_HEADERS, &[])
                .option(OPT_SET_META_CONTEXT, &base_allocation)
                .option(OPT_GO, &go_default)
                .extended_request(FLAG_PAYLOAD_LEN, CMD_WRITE, 4096, 512, &sector(4))
                .extended_request(0, CMD_READ, 4096, 512, &[])
                .extended_request(0, CMD_BLOCK_STATUS, 0, DISK, &[])
                .extended_request(0, CMD_WRITE_ZEROES, 0, DISK, &[])
                .extended_request(FLAG_PAYLOAD_LEN, CMD_TRIM, 0, 8, b"payload!")
                .extended_request(0, CMD_READ, DISK, 512, &[])
                .extended_request(0, CMD_FLUSH, 0, 0, &[])
                .extended_request(0, CMD_DISC, 0, 0, &[])
                .into_bytes(),
        ),
        (
            "extended-then-structured",
            newstyle()
                .option(OPT_EXTENDED_HEADERS, &[])
                .option(OPT_STRUCTURED_REPLY, &[])
                .option(OPT_EXTENDED_HEADERS, b"x")
                .option(OPT_EXPORT_NAME, b"")
                .into_bytes(),
        ),
        (
            "bad-client-flags",
            Session::new(0xffff_ffff).option(OPT_GO, &go_default).into_bytes(),
        ),
    ]
}

/// One input per property of the codec target; the first byte selects it.
fn codec_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |which: u8, parts: &[&[u8]]| [&[which][..], &parts.concat()].concat();
    let go = info_payload(b"", &[INFO_NAME, INFO_BLOCK_SIZE]);
    // What the request property reads after the header: base:allocation selected, the
    // export's size and flags (memory's, with structured replies).
    let export: &[u8] = &[&[1][..], &DISK.to_be_bytes(), &0x0dedu16.to_be_bytes()].concat();
    let (simple, structured, extended): (&[u8], &[u8], &[u8]) = (&[0], &[1], &[2]);
    let compact = |flags, command, offset, count| request(flags, command, 7, offset, count);
    vec![
        ("option-header", with(0, &[&option(OPT_GO, &go)[..16]])),
        ("option-header-flags", with(0, &[&[0, 0, 0, 3, 0, 3, b'.', b'.', 0, 0, 0, 7, 4, 0, 0, 1]])),
        ("info-request", with(1, &[&go])),
        ("info-request-named", with(1, &[&info_payload(b"disk", &[])])),
        ("meta-request", with(2, &[&meta_payload(b"", &[b"base:allocation", b"base:"])])),
        ("meta-request-empty", with(2, &[&meta_payload(b"disk", &[])])),
        ("export-name", with(3, &[b"disk"])),
        ("request-read", with(4, &[structured, &compact(FLAG_DF, CMD_READ, 0, 4096), export])),
        ("request-write", with(4, &[simple, &compact(FLAG_FUA, CMD_WRITE, 512, 512), export])),
        ("request-zero", with(4, &[structured, &compact(FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 0, 1 << 20), export])),
        ("request-block-status", with(4, &[structured, &compact(FLAG_REQ_ONE, CMD_BLOCK_STATUS, 0, 1), export])),
        ("request-flush", with(4, &[simple, &compact(0, CMD_FLUSH, 0, 0), export])),
        (
            "request-extended-write",
            with(4, &[extended, &extended_request(FLAG_PAYLOAD_LEN, CMD_WRITE, 7, 0, 4096), export]),
        ),
        (
            "request-extended-zero",
            with(4, &[extended, &extended_request(0, CMD_WRITE_ZEROES, 7, 0, 5 << 30), export]),
        ),
        // cookie · error · request flags · chunk flags, type, length · offset, length ·
        // data length · framing · message
        ("transmission-replies", with(5, &[&[1; 41], extended, b"an error\0after a NUL"])),
        ("transmission-replies-long", with(5, &[&[2; 41], structured, "é".repeat(2100).as_bytes()])),
        (
            "option-replies",
            with(6, &[b"\x00\x00\x00\x07\x00\x00\x00\x03\x00\x00\x00\x00\x00\x10\x00\x00\x0d\xed\x04disk\x06a diskpayload"]),
        ),
        // framing · count · REQ_ONE · cookie · offset · context id · (length · status)...
        (
            "block-status",
            with(7, &[
                structured, &4096u32.to_be_bytes(), &[0], &9u64.to_be_bytes(), &0u64.to_be_bytes(),
                &1u32.to_be_bytes(), &32768u64.to_be_bytes(), &0u32.to_be_bytes(),
                &(10u64 << 30).to_be_bytes(), &3u32.to_be_bytes(),
            ]),
        ),
        (
            "block-status-req-one",
            with(7, &[
                simple, &u32::MAX.to_be_bytes(), &[1], &9u64.to_be_bytes(), &0u64.to_be_bytes(),
                &1u32.to_be_bytes(), &(5u64 << 30).to_be_bytes(), &7u32.to_be_bytes(),
            ]),
        ),
        (
            "block-status-extended",
            with(7, &[
                extended, &(8u64 << 30).to_be_bytes(), &[0], &9u64.to_be_bytes(), &4096u64.to_be_bytes(),
                &1u32.to_be_bytes(), &(6u64 << 30).to_be_bytes(), &3u32.to_be_bytes(),
                &(6u64 << 30).to_be_bytes(), &0u32.to_be_bytes(),
            ]),
        ),
    ]
}
