//! The built-in `log` filter against nbdkit's: the same log file, line for line with the
//! timestamps masked, for the same client session (export listing, every kind of request,
//! failures, two connections, a read-only server); the file emptied unless logappend=true;
//! logscript= refused with a reason.

use crate::differential::*;
use crate::support::*;
use std::fs;

/// Every kind of request and a failure (a write the error filter below refuses).
const SESSION: &str = r#"
outcome("pread", lambda: h.pread(512, 0))
outcome("pwrite-fua", lambda: h.pwrite(b"x" * 512, 4096, nbd.CMD_FLAG_FUA))
outcome("zero", lambda: h.zero(8192, 0, nbd.CMD_FLAG_FAST_ZERO))
outcome("zero-may-trim", lambda: h.zero(8192, 0))
outcome("trim", lambda: h.trim(4096, 65536))
outcome("flush", lambda: h.flush())
outcome("cache", lambda: h.cache(512, 1024))
outcome("extents", lambda: h.block_status(65536, 0, lambda *a: 0))
outcome("extents-one", lambda: h.block_status(65536, 0, lambda *a: 0, nbd.CMD_FLAG_REQ_ONE))
outcome("past-end", lambda: h.pread(512, h.get_size()))
"#;

/// The log with each line's timestamp (its first 26 characters) replaced.
fn masked(text: &str) -> String {
    text.lines()
        .map(|l| {
            assert!(
                l.len() > 27 && l.as_bytes()[4] == b'-' && l.as_bytes()[19] == b'.',
                "no timestamp: {l}"
            );
            format!("TIMESTAMP{}\n", &l[26..])
        })
        .collect()
}

/// Run `script` against both servers with `args` plus `logfile=`; return both logs, masked.
fn logs(dir: &TempDir, args: &[&str], script: &str) -> (String, String) {
    let (ours, theirs) = (dir.str("ours.log"), dir.str("theirs.log"));
    let with_file = |f: &str| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.push(format!("logfile={f}"));
        v
    };
    let (our_args, their_args) = (with_file(&ours), with_file(&theirs));
    let (ours_out, theirs_out) = foreground(
        &our_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &their_args.iter().map(String::as_str).collect::<Vec<_>>(),
        script,
    );
    assert_eq!(ours_out, theirs_out, "the clients saw different results");
    (
        masked(&fs::read_to_string(&ours).unwrap()),
        masked(&fs::read_to_string(&theirs).unwrap()),
    )
}

#[test]
fn the_log_matches_nbdkits() {
    let dir = TempDir::new("log");
    let session = nbdsh_loose(&dir, "session", SESSION);
    let script = format!("nbdinfo --list \"$uri\" >/dev/null && {session} && {session}");
    let args = ["--filter=log", "--filter=error", "null", "1M", "error-pwrite-rate=100%"];
    let (ours, theirs) = logs(&dir, &args, &script);
    assert_eq!(ours, theirs);
    assert!(ours.contains("TIMESTAMP Ready thread_model=3\n"), "{ours}");
    assert!(ours.contains("ListExports id=1 exports=(\"\") return=0"), "{ours}");
    assert!(
        ours.contains("connection=3 ...Write id=2 return=-1 error=EIO"),
        "{ours}"
    );
    assert!(ours.contains("extents=(0x0 0x100000 \"hole,zero\") return=0"), "{ours}");
}

#[test]
fn a_read_only_server_and_an_export_name_match_nbdkit() {
    let dir = TempDir::new("logro");
    let script =
        "nbdinfo \"$uri\" >/dev/null && nbdinfo 'nbd+unix:///some%20name?socket='\"${uri#*socket=}\" >/dev/null";
    let (ours, theirs) = logs(&dir, &["-r", "--filter=log", "memory", "1M"], script);
    assert_eq!(ours, theirs);
    assert!(ours.contains("export=\"some name\""), "{ours}");
}

#[test]
fn the_file_is_emptied_unless_appending() {
    let dir = TempDir::new("logappend");
    let f = dir.str("log");
    for (append, kept) in [("logappend=false", false), ("logappend=true", true)] {
        fs::write(&f, "earlier line\n").unwrap();
        let args = ["--filter=log", "null", "1M", &format!("logfile={f}"), append];
        assert_success(&run_captive(&args, "nbdinfo --size \"$uri\""));
        let text = fs::read_to_string(&f).unwrap();
        assert_eq!(text.starts_with("earlier line\n"), kept, "{append}\n{text}");
        assert_eq!(text.matches(" Ready thread_model=").count(), 1, "{text}");
        assert!(text.contains(" Disconnect transactions=0\n"), "{text}");
    }
}

#[test]
fn logscript_is_refused_with_a_reason() {
    let o = run_captive(&["--filter=log", "null", "1M", "logscript=echo $act"], "true");
    assert_exit1(&o);
    assert!(stderr(&o).contains("no shell in the sandbox"), "{}", describe(&o));
}
