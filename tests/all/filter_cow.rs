//! The built-in `cow` filter: writes, zeroes and trims land in an overlay and never in the
//! plugin; reads of untouched blocks come from below; extents merge both. Differential
//! against nbdkit's cow filter, plus what nbdbox adds (zero in the overlay, one overlay per
//! export name), concurrent writers, virt-v2v's input stack and a trap below the filter.

use crate::support::*;
use std::fs;

/// A 4 MiB base image with data here and there, holes elsewhere.
fn base(dir: &TempDir) -> (String, Vec<u8>) {
    sparse_image(
        dir,
        "base.img",
        4 << 20,
        &[(0, 8192), (1 << 20, 200 << 10), (3 << 20, 4096)],
    )
}

/// Writes that cover every case: unaligned inside a block, across blocks, whole blocks,
/// the last partial block, and a trim of whole and partial blocks.
const WRITES: &str = r#"
h.pwrite(b"A" * 100, 70000)
h.pwrite(b"B" * 200000, 130000)
h.pwrite(b"C" * 131072, 2 * 1048576)
h.pwrite(b"D" * 10, h.get_size() - 10)
h.trim(3 * 65536 + 100, 1048576 + 65536 - 50)
"#;

/// Apply WRITES to a copy of `image`, as a disk would.
fn written(image: &[u8]) -> Vec<u8> {
    let mut want = image.to_vec();
    let end = want.len();
    want[70000..70100].fill(b'A');
    want[130000..330000].fill(b'B');
    want[2 << 20..(2 << 20) + 131072].fill(b'C');
    want[end - 10..].fill(b'D');
    let trim = (1 << 20) + 65536 - 50;
    want[trim..trim + 3 * 65536 + 100].fill(0);
    want
}

#[test]
fn writes_stay_in_the_overlay_and_match_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("cow");
    let (img, image) = base(&dir);
    let args = ["--filter=cow", "file", &img];
    let script = |out: &str| {
        format!(
            "{} && nbdcopy \"$uri\" {out} && nbdinfo --map \"$uri\"",
            nbdsh(&dir, "w", WRITES),
            out = shell_quote(out)
        )
    };
    let (ours, theirs) = (dir.str("ours.img"), dir.str("theirs.img"));
    let our_map = assert_success(&run_captive(&args, &script(&ours)));
    let their_map = assert_success(&nbdkit_captive(&args, &script(&theirs)));
    let want = written(&image);
    assert!(
        fs::read(&ours).unwrap() == want,
        "the overlay's view differs from the writes"
    );
    assert!(
        fs::read(&theirs).unwrap() == want,
        "nbdkit's view differs from the writes"
    );
    assert_eq!(our_map, their_map, "nbdinfo --map differs from nbdkit's");
    assert!(our_map.contains("hole,zero") && our_map.contains("data"), "{our_map}");
    assert!(fs::read(&img).unwrap() == image, "the plugin was written");
}

#[test]
fn advertises_as_nbdkit_except_zero() {
    let dir = TempDir::new("cowinfo");
    let (img, _) = base(&dir);
    for extra in [None, Some("cow-block-size=4096"), Some("cow-block-size=1M")] {
        let mut args = vec!["--filter=cow", "file", &img];
        args.extend(extra);
        let (ours, theirs) = both(&args, INFO_AND_MAP);
        let zero_lines =
            |s: &str| -> Vec<String> { s.lines().filter(|l| !l.contains("_zero:")).map(String::from).collect() };
        assert_eq!(zero_lines(&ours), zero_lines(&theirs), "{extra:?}");
        // nbdkit 1.32 inherits "no zero" from the read-only plugin below; the overlay zeroes.
        assert!(
            ours.contains("can_zero: true") && ours.contains("can_fast_zero: true"),
            "{ours}"
        );
        let preferred = extra.map_or("65536", |e| if e.ends_with("4096") { "4096" } else { "1048576" });
        assert!(ours.contains(&format!("block_size_preferred: {preferred}")), "{ours}");
    }
}

#[test]
fn zero_and_trim_in_the_overlay() {
    let dir = TempDir::new("cowzero");
    let (img, image) = base(&dir);
    let py = r#"
h.zero(1048576 + 65536 * 2, 1000)
try:
    h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO)
    print("fast ok")
except nbd.Error as e:
    print("fast", e.errno)
d = h.pread(h.get_size(), 0)
print("zeroes", d[1000:1000 + 1048576 + 131072] == bytes(1048576 + 131072))
print("after", d[1000 + 1048576 + 131072:1000 + 1048576 + 131072 + 100] == EXPECT)
"#
    .replace(
        "EXPECT",
        &format!("bytes.fromhex('{}')", hex(&image[1000 + (1 << 20) + 131072..][..100])),
    );
    let o = run_captive(
        &["--filter=cow", "file", &img],
        &format!("{} && nbdinfo --map \"$uri\"", nbdsh(&dir, "z", &py)),
    );
    let out = assert_success(&o);
    assert_eq!(value(&out, "fast"), "ENOTSUP", "a fast zero is refused\n{out}");
    assert_eq!(value(&out, "zeroes"), "True", "{out}");
    assert_eq!(
        value(&out, "after"),
        "True",
        "bytes after the zeroed range are kept\n{out}"
    );
    // Whole zeroed blocks report zero (not a hole: they were zeroed, not trimmed).
    assert!(out.contains("2  zero"), "{out}");
    assert!(fs::read(&img).unwrap() == image, "the plugin was written");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read block 0 (prints its first byte), then let the test change the file behind the
/// server's back, then read it again.
const READ_TWICE: &str = r#"
import os, time
print("first", h.pread(1, 0)[0])
open(os.environ["FLAG"], "w").close()
while os.path.exists(os.environ["FLAG"]):
    time.sleep(0.01)
print("second", h.pread(1, 0)[0])
"#;

#[test]
fn cow_on_read_keeps_what_was_read() {
    let dir = TempDir::new("cowread");
    for (mode, kept) in [("true", true), ("false", false), ("PATH", true), ("NOPATH", false)] {
        let img = dir.str("r.img");
        fs::write(&img, vec![1u8; 1 << 20]).unwrap();
        let trigger = dir.str("on");
        let _ = fs::remove_file(&trigger);
        if mode == "PATH" {
            fs::write(&trigger, b"").unwrap();
        }
        let value_arg = match mode {
            "PATH" | "NOPATH" => format!("cow-on-read={trigger}"),
            m => format!("cow-on-read={m}"),
        };
        let flag = dir.str("flag");
        // Meanwhile, a shell loop changes the base file once the first read is done.
        let script = format!(
            "export FLAG={flag}; (while [ ! -e {flag} ]; do sleep 0.01; done; printf '\\002' | dd of={img} conv=notrunc 2>/dev/null; rm {flag}) & {}",
            nbdsh(&dir, "rt", READ_TWICE),
            flag = shell_quote(&flag),
            img = shell_quote(&img),
        );
        let out = assert_success(&run_captive(&["--filter=cow", "file", &img, &value_arg], &script));
        assert_eq!(value(&out, "first"), "1", "{mode}\n{out}");
        let want = if kept { "1" } else { "2" };
        assert_eq!(
            value(&out, "second"),
            want,
            "cow-on-read={mode}: copied up or not\n{out}"
        );
    }
}

#[test]
fn one_overlay_per_export_name() {
    let dir = TempDir::new("cowexp");
    let py = r#"
import nbd, os, re
def handle(name):
    g = nbd.NBD()
    g.connect_uri(re.sub(r"^nbd\+unix://[^?]*", "nbd+unix:///" + name, os.environ["uri"]))
    return g
handle("a").pwrite(b"X" * 512, 0)
print("a2", handle("a").pread(1, 0)[0])
print("b", handle("b").pread(1, 0)[0])
"#;
    // The memory plugin serves one disk whatever the name: only the overlays differ.
    let o = run_captive(
        &["--filter=cow", "memory", "1M"],
        &format!("export uri; {}", nbdsh(&dir, "e", py)),
    );
    let out = assert_success(&o);
    assert_eq!(
        value(&out, "a2"),
        "88",
        "a second connection to 'a' sees its overlay\n{out}"
    );
    assert_eq!(value(&out, "b"), "0", "'b' has an overlay of its own\n{out}");
}

/// Four connections writing interleaved 1000-byte stripes (so neighbours share every 64 KiB
/// block), in a shuffled order, then one reading everything back.
pub const FOUR_WRITERS: &str = r#"
import nbd, os, random, threading
size = 4 * 1048576
stripe = 1000
def writer(i):
    g = nbd.NBD()
    g.connect_uri(os.environ["uri"])
    offsets = list(range(i * stripe, size - stripe, 4 * stripe))
    random.Random(i).shuffle(offsets)
    for off in offsets:
        g.pwrite(bytes([65 + i]) * stripe, off)
    g.flush()
    g.shutdown()
threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
d = h.pread(size, 0)
bad = [o for o in range(0, size - stripe, stripe) if d[o:o + stripe] != bytes([65 + (o // stripe) % 4]) * stripe]
print("bad", len(bad), bad[:5])
"#;

#[test]
fn four_concurrent_writers() {
    let dir = TempDir::new("cow4");
    let img = dir.str("base.img");
    fs::write(&img, pattern(9, 4 << 20)).unwrap();
    let before = fs::read(&img).unwrap();
    let o = run_captive(
        &["--filter=cow", "file", &img],
        &format!("export uri; {}", nbdsh(&dir, "w4", FOUR_WRITERS)),
    );
    let out = assert_success(&o);
    assert_eq!(value(&out, "bad"), "0 []", "stripes lost or torn\n{}", describe(&o));
    assert!(fs::read(&img).unwrap() == before, "the plugin was written");
}

/// virt-v2v's input stack, outermost first: `plugin → retry → blocksize → cow →
/// multi-conn` (nbdkit's order on the command line is the reverse).
pub const V2V_STACK: [&str; 4] = [
    "--filter=multi-conn",
    "--filter=cow",
    "--filter=blocksize",
    "--filter=retry",
];

#[test]
fn virt_v2v_stack_writes_through_cow() {
    tool("qemu-img");
    let dir = TempDir::new("v2v");
    let (img, image) = base(&dir);
    // What qemu-img writes: a different sparse image of the same size.
    let (source, source_data) = sparse_image(&dir, "src.img", 4 << 20, &[(4096, 12288), (2 << 20, 1 << 20)]);
    let mut args = V2V_STACK.to_vec();
    args.extend(["file", &img]);
    let script = |out: &str| {
        format!(
            "qemu-img convert -n -f raw -O raw {src} \"$nbd\" && qemu-img convert -f raw -O raw \"$nbd\" {out} && nbdinfo --map \"$uri\"",
            src = shell_quote(&source),
            out = shell_quote(out)
        )
    };
    let (ours, theirs) = (dir.str("ours.img"), dir.str("theirs.img"));
    let our_map = assert_success(&run_captive(&args, &script(&ours)));
    let their_map = assert_success(&nbdkit_captive(&args, &script(&theirs)));
    assert!(
        fs::read(&ours).unwrap() == source_data,
        "the overlay does not read back what qemu-img wrote"
    );
    assert!(fs::read(&theirs).unwrap() == source_data, "nbdkit's overlay differs");
    assert!(fs::read(&img).unwrap() == image, "the base file changed");
    // nbdkit cannot zero through cow, so qemu-img writes zero blocks as data there: the maps
    // agree on where the data is, not on how the zeroes were written.
    assert!(
        our_map.contains("data") && their_map.contains("data"),
        "{our_map}\n{their_map}"
    );
}

#[test]
fn a_trap_below_fails_the_request_and_the_overlay_survives() {
    let dir = TempDir::new("cowtrap");
    let (img, image) = base(&dir);
    let py = r#"
h.pwrite(b"K" * 4096, 0)
try:
    h.pread(512, 3 * 1048576)
    print("trap ok")
except nbd.Error as e:
    print("trap", e.errno)
print("kept", h.pread(4096, 0) == b"K" * 4096)
print("below", h.pread(16, 1048576).hex())
"#;
    let o = run_captive(
        &[
            "--filter=cow",
            &filter_arg("faulty"),
            "file",
            &img,
            "trap-offset=3145728",
        ],
        &nbdsh(&dir, "t", py),
    );
    let out = assert_success(&o);
    assert_eq!(value(&out, "trap"), "EIO", "the trapping read fails\n{}", describe(&o));
    assert_eq!(
        value(&out, "kept"),
        "True",
        "the overlay survives a trap below\n{}",
        describe(&o)
    );
    assert_eq!(
        value(&out, "below"),
        hex(&image[1 << 20..(1 << 20) + 16]),
        "{}",
        describe(&o)
    );
}
