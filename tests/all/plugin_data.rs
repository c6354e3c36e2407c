//! The built-in `data` plugin against nbdkit's: a corpus of expressions (bytes, offsets,
//! words, strings, repetition, slices, nesting, names, variables, comments, granted files)
//! served byte for byte as nbdkit serves them, with the same block status (nbdkit's sparse
//! allocator, page for page) and flags; raw= and base64=; the same refusals; writes kept for
//! every connection.

use crate::differential::*;
use crate::support::*;
use std::fs;
use std::process::Command;

/// Copy the disk to `out` and print its map.
fn copy_and_map(out: &str) -> String {
    format!("nbdcopy \"$uri\" {} && {MAP}", shell_quote(out))
}

/// `args` under both servers (in `cwd`, when given): the same bytes, map and nbdinfo.
#[track_caller]
fn same_disk(dir: &TempDir, args: &[&str], cwd: Option<&std::path::Path>) {
    let (ours, theirs) = (dir.str("ours.img"), dir.str("theirs.img"));
    let run = |server: std::path::PathBuf, out: &str| {
        let mut c = Command::new(server);
        c.args(["-U", "-"])
            .args(args)
            .args(["--run", &format!("{} && {NBDINFO}", copy_and_map(out))]);
        if let Some(cwd) = cwd {
            c.current_dir(cwd);
        }
        run_with_timeout(c, DEFAULT_TIMEOUT)
    };
    let o = run(bin(), &ours);
    let t = run(tool("nbdkit"), &theirs);
    let (o, t) = (assert_success(&o), assert_success(&t));
    assert_eq!(o, t, "{args:?}: map or flags differ");
    assert!(
        fs::read(&ours).unwrap() == fs::read(&theirs).unwrap(),
        "{args:?}: bytes differ"
    );
}

#[test]
fn expressions_match_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("data");
    let mbr = "@0x1be 0 0 2 0 0x83 0x20 0x20 0 le32:1 le32:0x7ff @0x1fe 0x55 0xaa";
    for args in [
        &["data", "1 2 3 @0x1fe 0x55 0xaa"][..],
        &["data", mbr, "size=1M"],
        &["data", "0 1 2 3 @^0x200 @-2 le16:0xaa55"],
        &["data", " ( 0x55 0xAA )*2048 "],
        &["data", " ( \"Hello\" )*2000 ", "size=8192"],
        &[
            "data",
            "be32:0x1 le64:0x123456789abcdef0 be16:258 le32:4294967295 be64:1 le16:0",
        ],
        &["data", r#""a\tb\x41\"\\z" "" "xx""#],
        &[
            "data",
            r"( 0x55 0xAA ) -> \boot ( @0x1fe \boot ) -> \sector \sector \sector",
        ],
        &["data", "$pattern*16 $pattern", "pattern=0x55 0xAA"],
        &["data", "1 2 3 @0 (@2 9)"],
        &["data", "0 0 0 0 @65536 1 @+70000 0 0 @-3 0"],
        &["data", "0*100000 1 (0 0 1)*40000"],
        &[
            "data",
            r#""hello"[1:3] (1 2 3 4)[1:] (0xff*100)[:10] (1 2)[:] "abc"[0:0]"#,
        ],
        &["data", "@0x100000"],
        &["data", "08 010 0x1F 255"],
        &["data", "# a comment\n 1 2 # more\n 3\t@^4096 \"x\"*3"],
        &["data", "(1 (2 (3 @8 4)*2)*2)[3:20] 5"],
        &["data", "0xff*70000 @32768 0*32768"],
        &["data", "1", "size=0"],
        &["data", "raw=Hello, world!"],
        &["data", "base64=MTIz", "size=1M"],
    ] {
        same_disk(&dir, args, None);
    }
}

#[test]
fn granted_files_match_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("datafile");
    let files = TempDir::new("datafiles");
    let f = files.str("f1");
    fs::write(&f, pattern(3, 1000)).unwrap();
    fs::write(files.join("f2"), b"second").unwrap();
    let one = format!("<{f} @^512 <{f}[100:300] <{f}[990:]");
    same_disk(&dir, &["data", &one, &format!("file={f}")], None);
    // Names in a granted directory; nbdkit reads them from its working directory.
    same_disk(&dir, &["data", "<f1 @^512 <f2 @^512", "dir=."], Some(&files.path));
}

#[test]
fn ungranted_files_and_scripts_are_refused_with_a_reason() {
    let dir = TempDir::new("dataref");
    let f = dir.str("f");
    fs::write(&f, b"x").unwrap();
    let o = run_captive(&["data", &format!("<{f}")], "true");
    assert_exit1(&o);
    assert!(stderr(&o).contains("file="), "{}", describe(&o));
    let o = run_captive(&["data", "<(echo hi)"], "true");
    assert_exit1(&o);
    assert!(stderr(&o).contains("no shell"), "{}", describe(&o));
    let o = run_captive(&["data", "1", "allocator=malloc"], "true");
    assert_exit1(&o);
    assert!(stderr(&o).contains("sparse"), "{}", describe(&o));
}

#[test]
fn bad_expressions_are_refused_as_by_nbdkit() {
    for bad in [
        "256",
        "(1",
        "1)",
        r"\x",
        "1 @-2",
        "@^3",
        "$nope",
        "\"abc",
        "*2",
        "@1*2",
        "le24:1",
        "(1 2)[3:1]",
        "z",
    ] {
        both_refuse(&["data", bad]);
    }
    both_refuse(&["data", "1", "raw=2"]);
    both_refuse(&["data", "raw=1", "extra=2"]);
    both_refuse(&["data", "size=1M"]);
}

#[test]
fn writes_are_kept_for_every_connection_as_with_nbdkit() {
    let dir = TempDir::new("datawrite");
    let write = nbdsh_loose(
        &dir,
        "write",
        r#"
outcome("pwrite", lambda: h.pwrite(b"\1" * 100, 40000, nbd.CMD_FLAG_FUA))
outcome("zero", lambda: h.zero(32768, 65536, nbd.CMD_FLAG_FAST_ZERO))
outcome("trim", lambda: h.trim(10, 0))
outcome("flush", lambda: h.flush())
"#,
    );
    let read = nbdsh_loose(&dir, "read", "outcome('pread', lambda: h.pread(200, 39950))\n");
    let out = same_as_nbdkit(&["data", "0xff*100000"], &format!("{write} && {read} && {MAP}"));
    assert!(
        out.contains("pwrite ok") && out.contains("65536       32768    3  hole,zero"),
        "{out}"
    );
}
