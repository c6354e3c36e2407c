//! The built-in `tar` plugin (nbdkit ≤ 1.24's plugin form) against GNU tar
//! and against Debian nbdkit's tar filter (`file X.tar --filter=tar
//! tar-entry=NAME`), on GNU-format (long names) and pax-format archives.

use crate::support::*;
use std::fs;

/// A member name longer than ustar's 100-byte name field.
fn long_name() -> String {
    format!("long-{}.img", "n".repeat(110))
}

/// The archive's members, in archive order: (name, contents).
fn members() -> Vec<(String, Vec<u8>)> {
    vec![
        ("a.txt".into(), b"first member\n".to_vec()),
        (long_name(), pattern(21, 300_000)),
        // Not a multiple of 512: the member ends inside a block.
        ("disk.img".into(), pattern(22, (1 << 20) + 1000)),
        ("z.bin".into(), pattern(23, 5000)),
    ]
}

/// Write the members into `dir` and archive them as `dir/NAME` with GNU tar
/// in `format` (gnu or pax). Returns the archive's path.
fn make_tar(dir: &TempDir, name: &str, format: &str) -> String {
    let names: Vec<String> = members()
        .into_iter()
        .map(|(n, data)| {
            fs::write(dir.join(&n), data).unwrap();
            n
        })
        .collect();
    let mut args = vec!["-c".to_owned(), format!("--format={format}"), "-f".into()];
    args.push(name.into());
    args.extend(names);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_success(&run_tool("tar", &args, Some(&dir.path)));
    dir.str(name)
}

/// `tar -xOf TAR MEMBER`: the member's bytes as GNU tar sees them.
fn extract(tar: &str, member: &str) -> Vec<u8> {
    let o = run_tool("tar", &["-xOf", tar, member], None);
    assert!(o.status.success(), "tar -xOf {member}\n{}", describe(&o));
    o.stdout
}

#[track_caller]
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i}: got {:#04x}, want {:#04x}",
            got[i], want[i]
        );
    }
}

/// Copy the served member out with nbdcopy, through nbdbox with `args`.
fn copy_out(dir: &TempDir, out: &str, args: &[&str]) -> Vec<u8> {
    let p = dir.str(out);
    let o = run_captive(args, &format!("nbdcopy \"$uri\" {}", shell_quote(&p)));
    assert_success(&o);
    fs::read(&p).unwrap()
}

/// Serve `member` of `tar` in both of nbdbox's forms and compare the bytes
/// with `tar -xOf` and (when `nbdkit_agrees`) with nbdkit's tar filter.
fn check_member(dir: &TempDir, tar: &str, member: &str, nbdkit_agrees: bool) {
    tool("nbdcopy");
    let want = extract(tar, member);
    let file_arg = format!("file={member}");
    let plugin_form = copy_out(dir, "p.out", &["tar", &format!("tar={tar}"), &file_arg]);
    assert_same(
        &format!("{member}: `tar tar=X file=M` vs tar -xOf"),
        &plugin_form,
        &want,
    );
    let magic_form = copy_out(dir, "m.out", &["tar", tar, &file_arg]);
    assert_same(&format!("{member}: `tar X file=M` vs tar -xOf"), &magic_form, &want);
    if nbdkit_agrees {
        let p = dir.str("k.out");
        let o = nbdkit_captive(
            &["file", tar, "--filter=tar", &format!("tar-entry={member}")],
            &format!("nbdcopy \"$uri\" {}", shell_quote(&p)),
        );
        assert_success(&o);
        assert_same(
            &format!("{member}: nbdbox vs nbdkit's tar filter"),
            &plugin_form,
            &fs::read(&p).unwrap(),
        );
    }
}

#[test]
fn gnu_format_members_match_tar_and_nbdkit() {
    let dir = TempDir::new("targnu");
    let tar = make_tar(&dir, "data.tar", "gnu");
    // disk.img follows a GNU long-name member, so finding it means walking past one.
    check_member(&dir, &tar, "disk.img", true);
    check_member(&dir, &tar, "z.bin", true);
    // The long-named member itself. nbdkit 1.32.5's tar filter takes the block
    // number `tar --block-number` prints for it, which is the GNU long-name
    // header's, and serves bytes 1024 too early; so only GNU tar is the
    // reference here.
    check_member(&dir, &tar, &long_name(), false);
}

#[test]
fn pax_format_members_match_tar_and_nbdkit() {
    let dir = TempDir::new("tarpax");
    let tar = make_tar(&dir, "data.tar", "pax");
    check_member(&dir, &tar, "disk.img", true);
    check_member(&dir, &tar, &long_name(), true);
    check_member(&dir, &tar, "a.txt", true);
}

/// Write into `member` through nbdbox, then check with GNU tar that the member
/// has the new bytes and every other member is unchanged.
fn write_in_place(format: &str, member: &str) {
    tool("qemu-io");
    let dir = TempDir::new("tarw");
    let tar = make_tar(&dir, "data.tar", format);
    let before = extract(&tar, member);
    let size = before.len();
    let tail = 1000.min(size / 4);
    let py = format!(
        "assert h.get_size() == {size}\nh.pwrite(b'\\xee' * {tail}, {})\nh.flush()\n",
        size - tail
    );
    let script = format!(
        "qemu-io -f raw -c 'write -P 0x5a 4096 65536' \"$nbd\" && {}",
        nbdsh(&dir, "tail", &py)
    );
    let o = run_captive(&["tar", &tar, &format!("file={member}")], &script);
    let out = assert_success(&o);
    assert!(!out.contains("failed"), "{}", describe(&o));

    let mut want = before.clone();
    want[4096..4096 + 65536].fill(0x5a);
    want[size - tail..].fill(0xee);
    assert_same(
        &format!("{member} after the writes ({format})"),
        &extract(&tar, member),
        &want,
    );
    // The archive is still valid and every other member is intact.
    let o = run_tool("tar", &["-tvf", &tar], None);
    assert!(o.status.success(), "tar -tvf after the writes\n{}", describe(&o));
    for (name, data) in members() {
        if name != member {
            assert_same(
                &format!("other member {name} after writing {member} ({format})"),
                &extract(&tar, &name),
                &data,
            );
        }
    }
}

#[test]
fn write_in_place_gnu() {
    write_in_place("gnu", "disk.img");
}

#[test]
fn write_in_place_pax_long_name() {
    write_in_place("pax", &long_name());
}

#[test]
fn write_in_place_gnu_long_name() {
    write_in_place("gnu", &long_name());
}

#[test]
fn missing_member_is_an_error_naming_it() {
    let dir = TempDir::new("tarmiss");
    let tar = make_tar(&dir, "data.tar", "gnu");
    for args in [
        vec!["tar".to_owned(), format!("tar={tar}"), "file=not-there.img".into()],
        vec!["tar".to_owned(), tar.clone(), "file=not-there.img".into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run_captive(&args, "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"), "{}", describe(&o));
        assert!(
            stderr(&o).contains("not-there.img"),
            "the error must name the member\n{}",
            describe(&o)
        );
    }
    // A missing archive names the archive.
    let gone = dir.str("gone.tar");
    let o = run_captive(&["tar", &gone, "file=disk.img"], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains(&gone), "{}", describe(&o));
}
