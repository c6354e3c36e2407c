//! The built-in `file` plugin, differential against nbdkit's file plugin where
//! Debian's nbdkit has the feature, plus the grant boundary (only the named
//! file or directory is reachable).

use crate::support::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// A file of `size` bytes that is a hole except for `data` at the given
/// 4 KiB-aligned offsets (so the data/hole map is exact on any filesystem).
fn sparse_file(path: &str, size: u64, data: &[(u64, usize)]) -> Vec<u8> {
    let mut f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut image = vec![0u8; size as usize];
    for (i, &(off, len)) in data.iter().enumerate() {
        assert_eq!(off % 4096, 0);
        let bytes = pattern(100 + i as u64, len);
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&bytes).unwrap();
        image[off as usize..off as usize + len].copy_from_slice(&bytes);
    }
    f.sync_all().unwrap();
    image
}

#[track_caller]
fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i}: got {:#04x}, want {:#04x}",
            got[i], want[i]
        );
    }
}

// ---------------------------------------------------------------------------
// Differential: nbdinfo --map / --size against nbdkit
// ---------------------------------------------------------------------------

#[test]
fn sparse_map_and_size_match_nbdkit() {
    tool("nbdinfo");
    let dir = TempDir::new("fmap");
    let f = dir.str("sparse.img");
    let size = 40 << 20;
    sparse_file(
        &f,
        size,
        &[
            (0, 8192),
            (1 << 20, 4096),
            (5 << 20, 300 << 10),
            (33 << 20, 64 << 10),
            (size - 4096, 4096),
        ],
    );
    let script = "nbdinfo --size \"$uri\" && nbdinfo --map \"$uri\"";
    let ours = assert_success(&run_captive(&["file", &f], script));
    let theirs = assert_success(&nbdkit_captive(&["file", &f], script));
    assert!(
        theirs.contains("hole") && theirs.contains("data"),
        "the reference map shows no holes: is the temp filesystem sparse?\n{theirs}"
    );
    assert_eq!(ours, theirs, "nbdinfo --size/--map differ from nbdkit's");
    assert_eq!(ours.lines().next().unwrap().trim(), size.to_string());
}

#[test]
fn qemu_img_convert_round_trip() {
    tool("qemu-img");
    tool("cmp");
    let dir = TempDir::new("fconv");
    let f = dir.str("sparse.img");
    let out = dir.str("out.img");
    sparse_file(&f, 8 << 20, &[(4096, 4096), (3 << 20, 1 << 20)]);
    let script = format!(
        "qemu-img convert -f raw -O raw \"$nbd\" {o} && cmp {f} {o} && echo SAME",
        o = shell_quote(&out),
        f = shell_quote(&f)
    );
    let o = run_captive(&["file", &f], &script);
    assert!(assert_success(&o).contains("SAME"), "{}", describe(&o));
}

// ---------------------------------------------------------------------------
// Writes, flush, FUA, trim, zero
// ---------------------------------------------------------------------------

#[test]
fn qemu_io_write_reaches_the_file() {
    tool("qemu-io");
    let dir = TempDir::new("fwr");
    let f = dir.str("disk.img");
    let data = pattern(7, 1 << 20);
    fs::write(&f, &data).unwrap();
    let o = run_captive(
        &["file", &f],
        "qemu-io -f raw -c 'write -P 0xa5 65536 12288' -c 'write -P 0x3c 1044480 4096' \"$nbd\"",
    );
    assert_success(&o);
    let mut want = data.clone();
    want[65536..65536 + 12288].fill(0xa5);
    want[1044480..].fill(0x3c);
    assert_same_bytes("file after qemu-io writes", &fs::read(&f).unwrap(), &want);
}

#[test]
fn nbdsh_flush_fua_trim_zero() {
    let dir = TempDir::new("fops");
    let f = dir.str("disk.img");
    let data = pattern(8, 1 << 20);
    fs::write(&f, &data).unwrap();
    let py = r#"
import errno
size = h.get_size()
assert size == 1048576, size
assert not h.is_read_only()
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero(), "caps"
h.pwrite(b"FUA!" * 1024, 8192, nbd.CMD_FLAG_FUA)
h.pwrite(b"PLAIN..." * 512, 16384)
h.flush()
assert h.pread(4096, 8192) == b"FUA!" * 1024
h.trim(65536, 131072)
assert h.pread(65536, 131072) == bytes(65536), "trim must read back as zeros"
h.zero(65536, 262144)
assert h.pread(65536, 262144) == bytes(65536), "zero must read back as zeros"
h.zero(4096, 393216, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 393216) == bytes(4096)
h.zero(4096, 524288, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 524288) == bytes(4096)
h.trim(4096, 655360, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 655360) == bytes(4096)
h.flush()
print("NBDSH-OK")
"#;
    let script = nbdsh(&dir, "ops", py);
    let o = run_captive(&["file", &f], &script);
    assert!(assert_success(&o).contains("NBDSH-OK"), "{}", describe(&o));
    // The file itself shows every change, and nothing else changed.
    let mut want = data.clone();
    want[8192..12288].copy_from_slice(&b"FUA!".repeat(1024));
    want[16384..20480].copy_from_slice(&b"PLAIN...".repeat(512));
    for (off, len) in [
        (131072, 65536),
        (262144, 65536),
        (393216, 4096),
        (524288, 4096),
        (655360, 4096),
    ] {
        want[off..off + len].fill(0);
    }
    assert_same_bytes("file after nbdsh ops", &fs::read(&f).unwrap(), &want);
}

// ---------------------------------------------------------------------------
// Read-only
// ---------------------------------------------------------------------------

#[test]
fn readonly_refuses_writes() {
    let dir = TempDir::new("fro");
    let f = dir.str("disk.img");
    let data = pattern(9, 256 << 10);
    fs::write(&f, &data).unwrap();

    // A real client sees a read-only export and cannot write.
    let py = r#"
import errno
assert h.is_read_only()
assert not h.can_trim() and not h.can_zero()
try:
    h.pwrite(b"x" * 512, 0)
    raise SystemExit("pwrite on a read-only export succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
print("RO-OK")
"#;
    let o = run_captive(&["-r", "file", &f], &nbdsh(&dir, "ro", py));
    assert!(assert_success(&o).contains("RO-OK"), "{}", describe(&o));

    // The server itself refuses a WRITE / WRITE_ZEROES / TRIM sent anyway.
    let srv = Server::start(&["-r", "file", &f]);
    let mut c = RawClient::open(&srv.sock, false, false);
    assert_ne!(c.eflags & nbd::TF_READ_ONLY, 0, "READ_ONLY flag not set");
    assert_eq!(c.write(0, &[0x55; 512]), nbd::EPERM, "WRITE under -r");
    assert_eq!(
        c.cmd(nbd::CMD_WRITE_ZEROES, 0, 0, 4096),
        nbd::EPERM,
        "WRITE_ZEROES under -r"
    );
    assert_eq!(c.cmd(nbd::CMD_TRIM, 0, 0, 4096), nbd::EPERM, "TRIM under -r");
    assert_eq!(c.read(0, 4096).unwrap(), &data[..4096]);
    c.disconnect();
    drop(srv);
    assert!(fs::read(&f).unwrap() == data, "-r: the file changed");
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = TempDir::new("fmiss");
    let f = dir.str("no-such-disk.img");
    for args in [vec!["file", f.as_str()], vec!["file", &format!("file={f}")]] {
        let o = run_captive(&args, "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"), "{}", describe(&o));
        assert!(
            stderr(&o).contains(&f),
            "the error must name the missing path\n{}",
            describe(&o)
        );
    }
}

// ---------------------------------------------------------------------------
// dir= mode
// ---------------------------------------------------------------------------

#[test]
fn dir_mode_lists_and_serves_each_file() {
    tool("nbdinfo");
    tool("nbdcopy");
    let dir = TempDir::new("fdir");
    let d = dir.join("exports");
    fs::create_dir(&d).unwrap();
    let a = pattern(11, 96 << 10);
    let b = pattern(12, 160 << 10);
    fs::write(d.join("a"), &a).unwrap();
    fs::write(d.join("b"), &b).unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    fs::write(d.join("sub").join("inner"), b"not an export").unwrap();
    let ds = d.to_str().unwrap();

    let list = "nbdinfo --list --json \"$uri\"";
    let ours = export_names(&assert_success(&run_captive(&["file", &format!("dir={ds}")], list)));
    let theirs = export_names(&assert_success(&nbdkit_captive(&["file", &format!("dir={ds}")], list)));
    let mut sorted = theirs.clone();
    sorted.sort();
    assert_eq!(sorted, ["a", "b"], "reference listing");
    // Both list in the directory's own (readdir) order.
    assert_eq!(ours, theirs, "export listing differs from nbdkit's");

    let (oa, ob) = (dir.str("a.out"), dir.str("b.out"));
    let script = format!(
        "nbdcopy \"nbd+unix:///a?socket=$unixsocket\" {oa} && \
         nbdcopy \"nbd+unix:///b?socket=$unixsocket\" {ob} && \
         nbdinfo --size \"nbd+unix:///b?socket=$unixsocket\" && \
         if nbdinfo --size \"nbd+unix:///sub?socket=$unixsocket\"; then echo SUB-SERVED; fi; \
         if nbdinfo --size \"nbd+unix:///no-such?socket=$unixsocket\"; then echo MISSING-SERVED; fi; \
         if nbdinfo --size \"$uri\"; then echo DEFAULT-SERVED; fi; echo DONE",
        oa = shell_quote(&oa),
        ob = shell_quote(&ob)
    );
    let o = run_captive(&["file", &format!("dir={ds}")], &script);
    let out = assert_success(&o);
    assert!(out.contains("DONE"), "{}", describe(&o));
    assert_eq!(out.lines().next().unwrap().trim(), (160 << 10).to_string());
    assert!(
        !out.contains("SUB-SERVED"),
        "a subdirectory was served\n{}",
        describe(&o)
    );
    assert!(
        !out.contains("MISSING-SERVED"),
        "a missing name was served\n{}",
        describe(&o)
    );
    assert!(
        !out.contains("DEFAULT-SERVED"),
        "the default export was served in dir mode\n{}",
        describe(&o)
    );
    assert_same_bytes("export a", &fs::read(&oa).unwrap(), &a);
    assert_same_bytes("export b", &fs::read(&ob).unwrap(), &b);
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

#[test]
fn two_nbdcopy_in_parallel() {
    tool("nbdcopy");
    let dir = TempDir::new("fpar");
    let f = dir.str("disk.img");
    let data = pattern(13, 24 << 20);
    fs::write(&f, &data).unwrap();
    let (o1, o2) = (dir.str("o1.img"), dir.str("o2.img"));
    let script = format!(
        "nbdcopy \"$uri\" {o1} & p1=$!
         nbdcopy \"$uri\" {o2} & p2=$!
         wait $p1 || exit 2
         wait $p2 || exit 3",
        o1 = shell_quote(&o1),
        o2 = shell_quote(&o2)
    );
    let o = run_captive_timeout(&["file", &f], &script, Duration::from_secs(120));
    assert_success(&o);
    assert_same_bytes("first parallel copy", &fs::read(&o1).unwrap(), &data);
    assert_same_bytes("second parallel copy", &fs::read(&o2).unwrap(), &data);
}

// ---------------------------------------------------------------------------
// Grants: only the named file (or directory) is reachable
// ---------------------------------------------------------------------------

#[test]
fn grant_is_only_the_named_file() {
    tool("nbdcopy");
    let dir = TempDir::new("fgrant");
    let f = dir.str("granted.img");
    let secret = b"SIBLING-SECRET-".repeat(4096);
    let data = pattern(14, secret.len());
    fs::write(&f, &data).unwrap();
    fs::write(dir.join("secret.img"), &secret).unwrap();
    let (o1, o2, o3) = (dir.str("o1"), dir.str("o2"), dir.str("o3"));
    // Whatever export name a client asks for, file mode serves the granted file:
    // there is no name under which the sibling can be reached.
    let script = format!(
        "nbdcopy \"$uri\" {o1} && \
         nbdcopy \"nbd+unix:///secret.img?socket=$unixsocket\" {o2} && \
         nbdcopy \"nbd+unix:///..%2Fsecret.img?socket=$unixsocket\" {o3}",
        o1 = shell_quote(&o1),
        o2 = shell_quote(&o2),
        o3 = shell_quote(&o3)
    );
    let o = run_captive(&["file", &f], &script);
    assert_success(&o);
    for out in [&o1, &o2, &o3] {
        assert_same_bytes(&format!("export read into {out}"), &fs::read(out).unwrap(), &data);
    }

    // dir= grants only the named directory: names that climb out are refused.
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("inside"), pattern(15, 4096)).unwrap();
    let script = "if nbdinfo --size \"nbd+unix:///..%2Fsecret.img?socket=$unixsocket\"; then echo ESCAPED; fi; \
                  nbdinfo --size \"nbd+unix:///inside?socket=$unixsocket\"";
    let o = run_captive(&["file", &format!("dir={}", sub.display())], script);
    let out = assert_success(&o);
    assert!(
        !out.contains("ESCAPED"),
        "dir= served a file outside the directory\n{}",
        describe(&o)
    );
    assert_eq!(out.trim(), "4096", "{}", describe(&o));
}

#[test]
fn file_on_a_directory_suggests_dir() {
    let dir = TempDir::new("fisdir");
    fs::write(dir.join("x.img"), [0u8; 512]).unwrap();
    let d = dir.path.to_str().unwrap();
    for args in [vec!["file", d], vec!["-r", "file", d]] {
        let o = run_captive(&args, "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"), "{}", describe(&o));
        assert!(
            stderr(&o).contains("dir="),
            "the error should suggest dir= ({args:?})\n{}",
            describe(&o)
        );
    }
    // Same wording family as nbdkit, which also points at dir=.
    let theirs = nbdkit_captive(&["file", d], "echo RAN");
    assert!(!theirs.status.success(), "{}", describe(&theirs));
}

#[test]
fn file_fd_stays_consistent_after_external_write() {
    // The plugin reads the file through the host's open descriptor: a change
    // made to the file behind the server's back is visible to the next read.
    let dir = TempDir::new("fext");
    let f = dir.str("disk.img");
    fs::write(&f, vec![0u8; 65536]).unwrap();
    let srv = Server::start(&["file", &f]);
    let mut c = RawClient::open(&srv.sock, false, false);
    assert_eq!(c.read(4096, 16).unwrap(), vec![0u8; 16]);
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all_at(b"EXTERNAL-CHANGE!", 4096)
        .unwrap();
    assert_eq!(c.read(4096, 16).unwrap(), b"EXTERNAL-CHANGE!");
    c.disconnect();
}

#[test]
fn empty_dir_lists_no_export_as_nbdkit() {
    tool("nbdinfo");
    let dir = TempDir::new("fempty");
    let d = dir.join("none");
    fs::create_dir(&d).unwrap();
    let args = ["file".to_owned(), format!("dir={}", d.display())];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let list = "nbdinfo --list --json \"$uri\"";
    let ours = export_names(&assert_success(&run_captive(&args, list)));
    let theirs = export_names(&assert_success(&nbdkit_captive(&args, list)));
    assert!(theirs.is_empty(), "reference listing: {theirs:?}");
    assert_eq!(ours, theirs);
}

/// `cache=none` keeps a file that was read out of the page cache, as nbdkit's does, also when
/// the reads are spliced (the pipes must let go of the pages before the plugin drops them);
/// with the default the whole file stays cached, so the measure can tell the two apart.
#[test]
fn cache_none_leaves_what_was_read_out_of_the_page_cache_as_nbdkit_does() {
    tool("nbdcopy");
    let fincore = tool("fincore");
    let dir = TempDir::new("fcachenone");
    let size: u64 = 16 << 20;
    let (f, _) = disk(&dir, "disk.img", 41, size as usize);
    fs::File::open(&f).unwrap().sync_all().unwrap();
    let resident_once = |nbdkit: bool, mode: &str| -> u64 {
        let drop =
            format!("import os; fd = os.open({f:?}, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)");
        assert_success(&run_tool("/usr/bin/python3", &["-c", &drop], None));
        let args = ["-r", "file", &f, mode];
        let script = "nbdcopy --request-size=262144 \"$uri\" null:";
        assert_success(&if nbdkit {
            nbdkit_captive(&args, script)
        } else {
            run_captive(&args, script)
        });
        let o = std::process::Command::new(&fincore)
            .args(["--bytes", "--noheadings", "--output", "RES", &f])
            .output()
            .unwrap();
        assert_success(&o).trim().parse().unwrap()
    };
    // Kernel readahead runs beside the parallel reads, and a page it brings in after its own
    // read evicted it stays: now and then several MiB more, for nbdkit too (6 MiB in 1 of 30
    // runs, against its usual 1 MiB). The best of three runs is what cache=none reliably
    // leaves; a server that evicted nothing would leave the whole file in every run.
    let resident_after =
        |nbdkit: bool, mode: &str| -> u64 { (0..3).map(|_| resident_once(nbdkit, mode)).min().unwrap() };
    // What the kernel read ahead past the last read stays (read_ahead_kb may be 8 MiB), and
    // more of it with parallel reads or a busy machine: measured against nbdkit in the same
    // conditions (about 1 MiB here), with a quarter of the file to spare, far from all of it.
    let (ours, theirs) = (resident_after(false, "cache=none"), resident_after(true, "cache=none"));
    assert!(
        ours <= theirs + size / 4,
        "cache=none: {ours} bytes stay cached (nbdkit: {theirs})"
    );
    assert_eq!(resident_once(false, "cache=default"), size, "cache=default");
}
