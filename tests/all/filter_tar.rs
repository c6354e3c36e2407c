//! The built-in `tar` filter (`file X.tar --filter=tar tar-entry=NAME`, nbdkit's spelling):
//! serving one member of an archive that the layer below holds, byte for byte as GNU tar and
//! Debian nbdkit's tar filter serve it, and written in place.

use crate::support::*;
use std::fs;

/// An archive of three members in `format` (gnu or pax); the middle one, `disk.img`, ends
/// inside a 512-byte block. Returns the archive's path and the members.
fn archive(dir: &TempDir, format: &str) -> (String, Vec<(&'static str, Vec<u8>)>) {
    let members = vec![
        ("a.txt", b"first member\n".to_vec()),
        ("disk.img", pattern(31, (1 << 20) + 700)),
        ("z.bin", pattern(32, 3000)),
    ];
    for (name, data) in &members {
        fs::write(dir.join(name), data).unwrap();
    }
    let format = format!("--format={format}");
    let args = ["-c", &format, "-f", "data.tar", "a.txt", "disk.img", "z.bin"];
    assert_success(&run_tool("tar", &args, Some(&dir.path)));
    (dir.str("data.tar"), members)
}

fn filter_args(tar: &str) -> Vec<String> {
    vec![
        "--filter=tar".into(),
        "file".into(),
        tar.into(),
        "tar-entry=disk.img".into(),
    ]
}

#[test]
fn member_bytes_and_map_match_tar_and_nbdkit() {
    tool("nbdcopy");
    for format in ["gnu", "pax"] {
        let dir = TempDir::new("tarfilter");
        let (tar, members) = archive(&dir, format);
        let args = filter_args(&tar);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ours, theirs) = (dir.str("ours.img"), dir.str("theirs.img"));
        let copy = |out: &str| format!("nbdcopy \"$uri\" {} && nbdinfo --map \"$uri\"", shell_quote(out));
        let o = run_captive(&args, &copy(&ours));
        let our_map = assert_success(&o);
        let o = nbdkit_captive(&args, &copy(&theirs));
        let their_map = assert_success(&o);
        assert_eq!(fs::read(&ours).unwrap(), members[1].1, "{format}: nbdbox vs the member");
        assert_eq!(
            fs::read(&theirs).unwrap(),
            members[1].1,
            "{format}: nbdkit vs the member"
        );
        assert_eq!(our_map, their_map, "{format}: nbdinfo --map differs from nbdkit's");
    }
}

#[test]
fn writes_land_in_the_member_and_nowhere_else() {
    let dir = TempDir::new("tarwrite");
    let (tar, members) = archive(&dir, "gnu");
    let before = fs::read(&tar).unwrap();
    let args = filter_args(&tar);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let py = "h.pwrite(b'W' * 4096, 8192)\nh.pwrite(b'E' * 100, h.get_size() - 100)\nh.flush()\n";
    assert_success(&run_captive(&args, &nbdsh(&dir, "write", py)));
    let mut want = members[1].1.clone();
    want[8192..8192 + 4096].fill(b'W');
    let end = want.len();
    want[end - 100..].fill(b'E');
    let o = run_tool("tar", &["-xOf", &tar, "disk.img"], None);
    assert_eq!(o.stdout, want, "the member as GNU tar reads it after the writes");
    for (name, data) in [&members[0], &members[2]] {
        let o = run_tool("tar", &["-xOf", &tar, name], None);
        assert_eq!(&o.stdout, data, "{name} must be untouched");
    }
    assert_eq!(
        fs::read(&tar).unwrap().len(),
        before.len(),
        "the archive keeps its size"
    );
}

#[test]
fn a_missing_entry_is_an_error_naming_it() {
    // As nbdkit's filter, the archive is searched when a client opens the export.
    let dir = TempDir::new("tarmissing");
    let (tar, _) = archive(&dir, "gnu");
    let o = run_captive(
        &["--filter=tar", "file", &tar, "tar-entry=no-such.img"],
        "nbdinfo --size \"$uri\" || echo REFUSED",
    );
    assert!(assert_success(&o).contains("REFUSED"), "{}", describe(&o));
    assert!(
        stderr(&o).contains("no-such.img"),
        "the error names the entry\n{}",
        describe(&o)
    );
}
