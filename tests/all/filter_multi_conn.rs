//! The built-in `multi-conn` filter: what it advertises in each mode (against nbdkit), and
//! that emulation makes one connection's flush reach every connection's layer below.

use crate::support::*;

#[test]
fn modes_advertise_as_nbdkit() {
    let dir = TempDir::new("mcinfo");
    let (img, _) = disk(&dir, "d.img", 80, 1 << 20);
    for mode in ["auto", "emulate", "plugin", "unsafe", "disable"] {
        let arg = format!("multi-conn-mode={mode}");
        for plugin in [["file", img.as_str()], ["memory", "1M"]] {
            let mut args = vec!["--filter=multi-conn"];
            args.extend(plugin);
            args.push(&arg);
            same_as_nbdkit(&args, INFO_AND_MAP);
        }
        // Below a layer without multi-conn (noparallel's serialize=connections drops it).
        same_as_nbdkit(
            &["--filter=multi-conn", "--filter=noparallel", "file", &img, &arg],
            INFO_AND_MAP,
        );
    }
}

/// Two connections write; a flush on the first is emulated on both connections below.
const FLUSH_ONE: &str = r#"
import nbd, os
def handle():
    g = nbd.NBD()
    g.connect_uri(os.environ["uri"])
    return g
a, b = handle(), handle()
a.pwrite(b"a" * 512, 0)
b.pwrite(b"b" * 512, 4096)
a.flush()
print("flushed")
a.flush()
print("again")
"#;

/// How many flushes reach the layer below after the writes.
fn flushes_below(mode: &str, track: &str) -> usize {
    let dir = TempDir::new("mcflush");
    let (img, _) = disk(&dir, "d.img", 81, 1 << 20);
    let o = run_captive(
        &[
            "-v",
            "--filter=multi-conn",
            &filter_arg("recorder"),
            "file",
            &img,
            &format!("multi-conn-mode={mode}"),
            &format!("multi-conn-track-dirty={track}"),
            "recorder=below",
        ],
        &format!("export uri; {}", nbdsh(&dir, "f", FLUSH_ONE)),
    );
    assert_success(&o);
    let calls = recorded(&stderr(&o));
    let writes_done = calls.iter().rposition(|c| c.starts_with("below: pwrite")).unwrap();
    calls[writes_done..]
        .iter()
        .filter(|c| c.as_str() == "below: flush")
        .count()
}

#[test]
fn emulate_flushes_every_connection_once() {
    // Three connections are open: nbdsh's own, which only reads at the end, and the two
    // writers. Emulate with connection tracking: the first flush reaches the two dirty
    // connections, the second finds nothing dirty.
    assert_eq!(flushes_below("emulate", "connection"), 2);
    // Without tracking both flushes reach all three connections.
    assert_eq!(flushes_below("emulate", "off"), 6);
    // Plugin mode only flushes the connection that asked.
    assert_eq!(flushes_below("plugin", "off"), 2);
    // Fast tracking: the first flush reaches every connection, the second nothing.
    assert_eq!(flushes_below("emulate", "fast"), 3);
}
