//! Real NBD clients (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh) driven
//! through captive `--run` scripts.

use crate::support::*;
use std::fs;
use std::time::Duration;

const EXAMPLE1_SIZE: u64 = 104_857_600;

/// Shell fragment running a Python snippet with nbdsh (handle `h` connected to $uri).
/// The snippet is stored in `dir` so that it needs no shell quoting.
fn nbdsh(dir: &TempDir, name: &str, py: &str) -> String {
    let nbdsh = tool("/usr/bin/nbdsh");
    let f = dir.join(&format!("{name}.py"));
    fs::write(&f, py).unwrap();
    format!(
        "{} -u \"$uri\" -c \"$(cat {})\"",
        nbdsh.display(),
        sq(f.to_str().unwrap())
    )
}

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
        assert_eq!(virtual_size(&ok(&o)), EXAMPLE1_SIZE, "{v}");
    }
}

#[test]
fn qemu_img_info_memory() {
    tool("qemu-img");
    let o = run_captive(&["memory", "size=3G"], "qemu-img info --output=json \"$nbd\"");
    assert_eq!(virtual_size(&ok(&o)), 3 << 30);
}

#[test]
fn qemu_img_convert_example1() {
    tool("qemu-img");
    let dir = TempDir::new("conv1");
    let out = dir.str("out.img");
    let o = run_captive(
        &["example1"],
        &format!("qemu-img convert -f raw -O raw \"$nbd\" {}", sq(&out)),
    );
    ok(&o);
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
        sq(&out)
    );
    let o = run_captive(&["memory", "4M"], &script);
    ok(&o);
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
    let out = ok(&o);
    assert!(!out.contains("failed"), "{}", show(&o));
    assert!(out.contains("read 65536/65536 bytes at offset 0"), "{}", show(&o));
    // The pattern check itself works (a wrong pattern must fail).
    let o = run_captive(
        &["memory", "1M"],
        "qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'read -P 0xac 0 64k' \"$nbd\"",
    );
    assert!(!o.status.success() || stdout(&o).contains("failed"), "{}", show(&o));
}

#[test]
fn qemu_io_example1_read_only() {
    tool("qemu-io");
    let o = run_captive(
        &["example1"],
        "qemu-io -r -f raw -c 'read -P 0x55 0x1fe 1' -c 'read -P 0 512 1M' \"$nbd\"",
    );
    let out = ok(&o);
    assert!(!out.contains("failed"), "{}", show(&o));
    // Writes are refused.
    let o = run_captive(&["example1"], "qemu-io -f raw -c 'write -P 1 0 512' \"$nbd\"");
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !o.status.success() || all.to_lowercase().contains("read-only") || all.contains("failed"),
        "{}",
        show(&o)
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
    assert_eq!(ok(&o).trim(), "1048576");

    let o = run_captive(&["memory", "1M"], "nbdinfo --list --json \"$uri\"");
    let out = ok(&o);
    assert_eq!(out.matches("\"export-name\"").count(), 1, "one export\n{out}");
    assert!(out.contains("\"export-name\": \"\""), "{out}");
    assert!(out.contains("base:allocation"), "{out}");
    assert!(out.contains("\"is_read_only\": false"), "{out}");

    let o = run_captive(&["-r", "memory", "1M"], "nbdinfo --json \"$uri\"");
    assert!(ok(&o).contains("\"is_read_only\": true"));

    let w = nbdsh(&dir, "w", "h.pwrite(b\"x\" * 4096, 0)\n");
    let o = run_captive(&["memory", "1M"], &format!("{w} && nbdinfo --map \"$uri\""));
    let out = ok(&o);
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
    let script = format!("nbdcopy {} \"$uri\" && nbdcopy \"$uri\" {}", sq(&src), sq(&dst));
    let o = run_captive(&["memory", "8M"], &script);
    ok(&o);
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
        src = sq(&src),
        o1 = sq(&o1),
        o2 = sq(&o2)
    );
    let o = run_captive_timeout(&["memory", "16M"], &script, Duration::from_secs(120));
    let out = ok(&o);
    assert!(!out.contains("failed"), "{}", show(&o));
    assert!(fs::read(&o1).unwrap() == data, "first parallel copy differs");
    assert!(fs::read(&o2).unwrap() == data, "second parallel copy differs");
}

#[test]
fn nbdsh_pwrite_pread_zero_trim_flush() {
    let dir = TempDir::new("sh");
    let py = r#"
size = h.get_size()
assert size == 1048576, size
assert h.can_trim() and h.can_zero() and h.can_flush() and h.can_fua() and h.can_multi_conn()
assert not h.is_read_only()
buf = bytes(range(256)) * 64
h.pwrite(buf, 4096)
assert h.pread(16384, 4096) == buf
h.pwrite(b"\x01" * 512, size - 512, nbd.CMD_FLAG_FUA)
assert h.pread(512, size - 512) == b"\x01" * 512
h.zero(4096, 8192)
assert h.pread(16384, 4096) == buf[:4096] + bytes(4096) + buf[8192:]
h.zero(4096, 12288, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(16384, 4096) == buf[:4096] + bytes(8192) + buf[12288:]
h.pwrite(buf, 65536)
h.trim(16384, 65536)
assert h.pread(16384, 65536) == bytes(16384)
h.flush()
h.cache(4096, 65536)
print("NBDSH-OK")
"#;
    let script = nbdsh(&dir, "ops", py);
    let o = run_captive(&["memory", "1M"], &script);
    assert!(ok(&o).contains("NBDSH-OK"), "{}", show(&o));
}

#[test]
fn memory_shared_across_connections() {
    let dir = TempDir::new("shared");
    let w = nbdsh(&dir, "w", "h.pwrite(b\"shared!!\" * 512, 1000)\n");
    let r = nbdsh(
        &dir,
        "r",
        "assert h.pread(4096, 1000) == b\"shared!!\" * 512\nprint(\"SAW-IT\")\n",
    );
    let o = run_captive(&["memory", "1M"], &format!("{w} && {r}"));
    assert!(ok(&o).contains("SAW-IT"), "{}", show(&o));
}

#[test]
fn memory_largest_size() {
    let dir = TempDir::new("largest");
    let py = r#"
size = h.get_size()
assert size == 2**63 - 1, size
for off, data in [(0, b"A" * 512), (1000000001, b"B" * 512), (2**63 - 512, b"C" * 511)]:
    h.pwrite(data, off)
for off, data in [(0, b"A" * 512), (1000000001, b"B" * 512), (2**63 - 512, b"C" * 511)]:
    assert h.pread(len(data), off) == data, off
assert h.pread(4096, 2**62) == bytes(4096)
assert h.pread(512, 1000000001 + 512) == bytes(512)
print("LARGEST-OK")
"#;
    let script = nbdsh(&dir, "largest", py);
    let o = run_captive(&["memory", "size=9223372036854775807"], &script);
    assert!(ok(&o).contains("LARGEST-OK"), "{}", show(&o));
}

#[test]
fn memory_largest_for_qemu() {
    tool("qemu-io");
    let o = run_captive(
        &["memory", "9223372035781033984"],
        "qemu-io -f raw -c 'write -P 1 0 512' -c 'write -P 2 1000000001 512' \
         -c 'write -P 3 9223372035781032960 512' -c 'read -P 1 0 512' -c 'read -P 2 1000000001 512' \
         -c 'read -P 0 2000000000 512' -c 'read -P 3 9223372035781032960 512' \"$nbd\"",
    );
    let out = ok(&o);
    assert!(!out.contains("failed"), "{}", show(&o));
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
    let o = run_captive(&["file", &img], &format!("nbdcopy \"$uri\" {} && {w}", sq(&out)));
    ok(&o);
    assert!(fs::read(&out).unwrap() == data, "file plugin served different bytes");
    let now = fs::read(&img).unwrap();
    assert_eq!(&now[1024..1034], b"FILEPLUGIN", "write did not reach the file");
    assert_eq!(&now[..1024], &data[..1024]);
    assert_eq!(&now[1034..], &data[1034..]);

    // file= form, read-only.
    let o = run_captive(&["-r", "file", &format!("file={img}")], "nbdinfo --json \"$uri\"");
    let out = ok(&o);
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
    ok(&run_with_timeout(c, DEFAULT_TIMEOUT));
    let tarf = dir.str("data.tar");
    let out = dir.str("out.img");
    let w = nbdsh(&dir, "w", "h.pwrite(b\"TARWRITE\", 4096)\n");
    let o = run_captive(
        &["tar", &format!("tar={tarf}"), "file=disk.img"],
        &format!("nbdinfo --size \"$uri\" && nbdcopy \"$uri\" {} && {w}", sq(&out)),
    );
    let s = ok(&o);
    assert_eq!(s.lines().next().unwrap().trim(), "1048576");
    assert!(fs::read(&out).unwrap() == disk, "tar member contents differ");
    // Written in place: the archive still lists and extracts.
    let mut c = std::process::Command::new("tar");
    c.args(["xOf", &tarf, "disk.img"]);
    let x = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert!(x.status.success(), "{}", show(&x));
    assert_eq!(&x.stdout[4096..4104], b"TARWRITE");
    assert_eq!(x.stdout.len(), 1 << 20);
}
