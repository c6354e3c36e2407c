//! Real NBD clients (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh) driven
//! through captive `--run` scripts.

use crate::support::*;
use std::fs;
use std::time::Duration;

const EXAMPLE1_SIZE: u64 = 104_857_600;

fn virtual_size(json: &str) -> u64 {
    // Top-level "virtual-size" (last occurrence: children come first).
    let key = "\"virtual-size\":";
    let i = json.rfind(key).unwrap_or_else(|| panic!("no virtual-size in {json}"));
    json[i + key.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[track_caller]
fn check_example1_mbr(img: &[u8]) {
    assert_eq!(img.len() as u64, EXAMPLE1_SIZE);
    assert_eq!(&img[0x1b8..0x1bc], &[0xe1, 0x5b, 0x02, 0x00], "disk signature");
    assert_eq!(&img[0x1bc..0x1be], &[0, 0]);
    assert_eq!(img[0x1be], 0x00, "partition 1 not active");
    assert_eq!(img[0x1c2], 0x83, "partition type Linux");
    assert_eq!(
        u32::from_le_bytes(img[0x1c6..0x1ca].try_into().unwrap()),
        128,
        "start LBA"
    );
    assert_eq!(
        u32::from_le_bytes(img[0x1ca..0x1ce].try_into().unwrap()),
        204_545,
        "length in sectors"
    );
    assert!(img[0x1ce..0x1fe].iter().all(|&b| b == 0), "partition entries 2-4 empty");
    assert_eq!(&img[0x1fe..0x200], &[0x55, 0xaa]);
    assert!(img[0x200..].iter().all(|&b| b == 0), "rest of example1 is zeros");
}

// --------------------------------------------------------------------------
// qemu
// --------------------------------------------------------------------------

#[test]
fn qemu_img_info_example1() {
    tool("qemu-img");
    // $nbd in qemu syntax, and the URI.
    for v in ["$nbd", "$uri"] {
        let o = run_captive(&["example1"], &format!("qemu-img info --output=json \"{v}\""));
        assert_eq!(virtual_size(&assert_success(&o)), EXAMPLE1_SIZE, "{v}");
    }
}

#[test]
fn qemu_img_info_memory() {
    tool("qemu-img");
    let o = run_captive(&["memory", "size=3G"], "qemu-img info --output=json \"$nbd\"");
    assert_eq!(virtual_size(&assert_success(&o)), 3 << 30);
}

#[test]
fn qemu_img_convert_example1() {
    tool("qemu-img");
    let dir = TempDir::new("conv1");
    let out = dir.str("out.img");
    let o = run_captive(
        &["example1"],
        &format!("qemu-img convert -f raw -O raw \"$nbd\" {}", shell_quote(&out)),
    );
    assert_success(&o);
    check_example1_mbr(&fs::read(&out).unwrap());
}

#[test]
fn qemu_img_convert_memory() {
    tool("qemu-img");
    tool("qemu-io");
    let dir = TempDir::new("convm");
    let out = dir.str("out.img");
    let script = format!(
        "qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'write -P 0x11 1M 4k' -c 'write -P 0x22 4092k 4k' \"$nbd\" >/dev/null && \
         qemu-img convert -f raw -O raw \"$uri\" {}",
        shell_quote(&out)
    );
    let o = run_captive(&["memory", "4M"], &script);
    assert_success(&o);
    let mut want = vec![0u8; 4 << 20];
    want[..65536].fill(0xab);
    want[1 << 20..(1 << 20) + 4096].fill(0x11);
    want[(4 << 20) - 4096..].fill(0x22);
    let got = fs::read(&out).unwrap();
    assert!(got == want, "converted image differs from what qemu-io wrote");
}

#[test]
fn qemu_io_write_read_pattern() {
    tool("qemu-io");
    let o = run_captive(
        &["memory", "1M"],
        "qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' -c 'read -P 0 64k 64k' \"$nbd\"",
    );
    let out = assert_success(&o);
    assert!(!out.contains("failed"), "{}", describe(&o));
    assert!(out.contains("read 65536/65536 bytes at offset 0"), "{}", describe(&o));
    // The pattern check itself works (a wrong pattern must fail).
    let o = run_captive(
        &["memory", "1M"],
        "qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'read -P 0xac 0 64k' \"$nbd\"",
    );
    assert!(!o.status.success() || stdout(&o).contains("failed"), "{}", describe(&o));
}

#[test]
fn qemu_io_example1_read_only() {
    tool("qemu-io");
    let o = run_captive(
        &["example1"],
        "qemu-io -r -f raw -c 'read -P 0x55 0x1fe 1' -c 'read -P 0 512 1M' \"$nbd\"",
    );
    let out = assert_success(&o);
    assert!(!out.contains("failed"), "{}", describe(&o));
    // Writes are refused.
    let o = run_captive(&["example1"], "qemu-io -f raw -c 'write -P 1 0 512' \"$nbd\"");
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !o.status.success() || all.to_lowercase().contains("read-only") || all.contains("failed"),
        "{}",
        describe(&o)
    );
}

// --------------------------------------------------------------------------
// libnbd tools
// --------------------------------------------------------------------------

#[test]
fn nbdinfo_size_list_map() {
    tool("nbdinfo");
    let dir = TempDir::new("info");
    let o = run_captive(&["memory", "1M"], "nbdinfo --size \"$uri\"");
    assert_eq!(assert_success(&o).trim(), "1048576");

    let o = run_captive(&["memory", "1M"], "nbdinfo --list --json \"$uri\"");
    let out = assert_success(&o);
    assert_eq!(out.matches("\"export-name\"").count(), 1, "one export\n{out}");
    assert!(out.contains("\"export-name\": \"\""), "{out}");
    assert!(out.contains("base:allocation"), "{out}");
    assert!(out.contains("\"is_read_only\": false"), "{out}");

    let o = run_captive(&["-r", "memory", "1M"], "nbdinfo --json \"$uri\"");
    assert!(assert_success(&o).contains("\"is_read_only\": true"));

    let w = nbdsh(&dir, "w", "h.pwrite(b\"x\" * 4096, 0)\n");
    let o = run_captive(&["memory", "1M"], &format!("{w} && nbdinfo --map \"$uri\""));
    let out = assert_success(&o);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(&rows[0][..3], &["0", "32768", "0"], "{out}");
    assert_eq!(rows[0][3], "data");
    assert_eq!(&rows[1][..3], &["32768", "1015808", "3"], "{out}");
    assert_eq!(rows[1][3], "hole,zero");
}

#[test]
fn nbdcopy_roundtrip() {
    tool("nbdcopy");
    let dir = TempDir::new("copy");
    let src = dir.str("in.img");
    let dst = dir.str("out.img");
    let data = pattern(42, 8 << 20);
    fs::write(&src, &data).unwrap();
    let script = format!(
        "nbdcopy {} \"$uri\" && nbdcopy \"$uri\" {}",
        shell_quote(&src),
        shell_quote(&dst)
    );
    let o = run_captive(&["memory", "8M"], &script);
    assert_success(&o);
    assert!(fs::read(&dst).unwrap() == data, "nbdcopy round trip changed the data");
}

#[test]
fn nbdcopy_two_clients_in_parallel() {
    tool("nbdcopy");
    tool("qemu-io");
    let dir = TempDir::new("par");
    let src = dir.str("in.img");
    let (o1, o2) = (dir.str("o1.img"), dir.str("o2.img"));
    let data = pattern(43, 16 << 20);
    fs::write(&src, &data).unwrap();
    let script = format!(
        "nbdcopy {src} \"$uri\" || exit 1
         nbdcopy \"$uri\" {o1} & p1=$!
         nbdcopy \"$uri\" {o2} & p2=$!
         wait $p1 || exit 2
         wait $p2 || exit 3
         qemu-io -f raw -c 'write -P 0x11 0 4M' \"$nbd\" >/dev/null & p1=$!
         qemu-io -f raw -c 'write -P 0x22 4M 4M' \"$nbd\" >/dev/null & p2=$!
         wait $p1 || exit 4
         wait $p2 || exit 5
         qemu-io -r -f raw -c 'read -P 0x11 0 4M' -c 'read -P 0x22 4M 4M' \"$nbd\"",
        src = shell_quote(&src),
        o1 = shell_quote(&o1),
        o2 = shell_quote(&o2)
    );
    let o = run_captive_timeout(&["memory", "16M"], &script, Duration::from_secs(120));
    let out = assert_success(&o);
    assert!(!out.contains("failed"), "{}", describe(&o));
    assert!(fs::read(&o1).unwrap() == data, "first parallel copy differs");
    assert!(fs::read(&o2).unwrap() == data, "second parallel copy differs");
}

// --------------------------------------------------------------------------
// file and tar plugins
// --------------------------------------------------------------------------

#[test]
fn file_plugin_read_write() {
    tool("nbdcopy");
    let dir = TempDir::new("file");
    let img = dir.str("disk.img");
    let data = pattern(44, 2 << 20);
    fs::write(&img, &data).unwrap();
    let out = dir.str("out.img");
    let w = nbdsh(&dir, "w", "h.pwrite(b\"FILEPLUGIN\", 1024)\nh.flush()\n");
    let o = run_captive(
        &["file", &img],
        &format!("nbdcopy \"$uri\" {} && {w}", shell_quote(&out)),
    );
    assert_success(&o);
    assert!(fs::read(&out).unwrap() == data, "file plugin served different bytes");
    let now = fs::read(&img).unwrap();
    assert_eq!(&now[1024..1034], b"FILEPLUGIN", "write did not reach the file");
    assert_eq!(&now[..1024], &data[..1024]);
    assert_eq!(&now[1034..], &data[1034..]);

    // file= form, read-only.
    let o = run_captive(&["-r", "file", &format!("file={img}")], "nbdinfo --json \"$uri\"");
    let out = assert_success(&o);
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert!(out.contains("\"export-size\": 2097152"), "{out}");
}

#[test]
fn tar_plugin_member() {
    tool("tar");
    tool("nbdcopy");
    tool("nbdinfo");
    let dir = TempDir::new("tar");
    fs::write(dir.join("a.txt"), b"first member\n").unwrap();
    let disk = pattern(45, 1 << 20);
    fs::write(dir.join("disk.img"), &disk).unwrap();
    let mut c = std::process::Command::new("tar");
    c.current_dir(&dir.path).args(["cf", "data.tar", "a.txt", "disk.img"]);
    assert_success(&run_with_timeout(c, DEFAULT_TIMEOUT));
    let tarf = dir.str("data.tar");
    let out = dir.str("out.img");
    let w = nbdsh(&dir, "w", "h.pwrite(b\"TARWRITE\", 4096)\n");
    let o = run_captive(
        &["tar", &format!("tar={tarf}"), "file=disk.img"],
        &format!(
            "nbdinfo --size \"$uri\" && nbdcopy \"$uri\" {} && {w}",
            shell_quote(&out)
        ),
    );
    let s = assert_success(&o);
    assert_eq!(s.lines().next().unwrap().trim(), "1048576");
    assert!(fs::read(&out).unwrap() == disk, "tar member contents differ");
    // Written in place: the archive still lists and extracts.
    let mut c = std::process::Command::new("tar");
    c.args(["xOf", &tarf, "disk.img"]);
    let x = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert!(x.status.success(), "{}", describe(&x));
    assert_eq!(&x.stdout[4096..4104], b"TARWRITE");
    assert_eq!(x.stdout.len(), 1 << 20);
}
