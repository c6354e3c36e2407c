//! The built-in `stats` filter against nbdkit's: the same statistics file, with times and
//! rates masked, for the same session over two connections (counts, bytes, size and
//! alignment histograms); the threshold, appending, and the file written on SIGTERM.

use crate::differential::*;
use crate::support::*;
use std::fs;

/// Requests of several sizes and alignments; every size class has a different count, so
/// nbdkit's histogram (which keeps one class per count) shows them all.
const SESSION: &str = r#"
for i in range(12):
    h.pread(4096, i * 4096)
for i in range(5):
    h.pread(65536, 3 + i * 65536)
h.pread(512, 0)
for i in range(3):
    h.pwrite(b"x" * 1000, i * 1000)
h.pwrite(b"y" * 131072, 1 << 20)
h.zero(65536, 0)
h.trim(8192, 16384)
h.flush()
h.cache(4096, 0)
h.block_status(65536, 0, lambda *a: 0)
"#;

/// The file with every time ("N.NNNNNN s") and rate ("... /s") replaced.
fn masked(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.split(", ")
                .map(|field| {
                    if field.ends_with("/s") || field.ends_with("/s op") || field.ends_with("/s total") {
                        "RATE".to_string()
                    } else if field.ends_with(" s") && field.split(' ').next().is_some_and(|n| n.contains('.')) {
                        "TIME".to_string()
                    } else {
                        field.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
                + "\n"
        })
        .collect()
}

fn stats_of(args: &[&str], script: &str, dir: &TempDir) -> (String, String) {
    let (ours, theirs) = (dir.str("ours.txt"), dir.str("theirs.txt"));
    let run = |file: &str, nbdkit: bool| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.push(format!("statsfile={file}"));
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        let o = if nbdkit {
            nbdkit_captive(&v, script)
        } else {
            run_captive(&v, script)
        };
        assert_success(&o);
        fs::read_to_string(file).unwrap()
    };
    (masked(&run(&ours, false)), masked(&run(&theirs, true)))
}

#[test]
fn statistics_match_nbdkits() {
    let dir = TempDir::new("stats");
    let session = nbdsh_loose(&dir, "session", SESSION);
    let script = format!("{session} && {session}");
    for threshold in [
        None,
        Some("statsthreshold=50"),
        Some("statsthreshold=100"),
        Some("statsthreshold=0"),
    ] {
        let mut args = vec!["--filter=stats", "memory", "4M"];
        args.extend(threshold);
        let (ours, theirs) = stats_of(&args, &script, &dir);
        assert_eq!(ours, theirs, "{threshold:?}");
        assert!(ours.starts_with("total: 52 ops, TIME, "), "{ours}");
        assert_eq!(
            ours.contains("breakdown"),
            threshold != Some("statsthreshold=0"),
            "{ours}"
        );
    }
}

#[test]
fn appending_keeps_the_earlier_statistics() {
    let dir = TempDir::new("statsappend");
    let f = dir.str("stats.txt");
    fs::write(&f, "earlier\n").unwrap();
    let file = format!("statsfile={f}");
    for _ in 0..2 {
        let args = ["--filter=stats", "null", "1M", &file, "statsappend=true"];
        assert_success(&run_captive(&args, "nbdcopy \"$uri\" null:"));
    }
    let text = fs::read_to_string(&f).unwrap();
    assert!(text.starts_with("earlier\ntotal: "), "{text}");
    assert_eq!(text.matches("total: ").count(), 2, "{text}");
    assert_success(&run_captive(&["--filter=stats", "null", "1M", &file], "true"));
    let text = fs::read_to_string(&f).unwrap();
    assert!(text.starts_with("total: 0 ops"), "replaced, not appended: {text}");
}

#[test]
fn written_when_the_server_is_stopped_as_by_nbdkit() {
    let dir = TempDir::new("statsterm");
    let (ours, theirs) = (dir.str("ours.txt"), dir.str("theirs.txt"));
    let script = nbdsh_loose(&dir, "session", SESSION);
    let (our_file, their_file) = (format!("statsfile={ours}"), format!("statsfile={theirs}"));
    foreground(
        &["--filter=stats", "memory", "4M", &our_file],
        &["--filter=stats", "memory", "4M", &their_file],
        &script,
    );
    let (ours, theirs) = (fs::read_to_string(ours).unwrap(), fs::read_to_string(theirs).unwrap());
    assert!(ours.starts_with("total: 26 ops"), "{ours}");
    assert_eq!(masked(&ours), masked(&theirs));
}

#[test]
fn bad_settings_are_refused_as_by_nbdkit() {
    both_refuse(&["--filter=stats", "null", "1M"]);
    for bad in [
        "statsthreshold=101",
        "statsthreshold=-1",
        "statsthreshold=x",
        "statsappend=maybe",
    ] {
        both_refuse(&["--filter=stats", "null", "1M", "statsfile=/dev/null", bad]);
    }
}
