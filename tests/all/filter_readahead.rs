//! The built-in `readahead` filter: copies through it are identical to the source (nbdcopy
//! and qemu-img, over the file and memory plugins), and the window it prefetches from the
//! layer below (logged by the test-only `recorder` filter) keeps its minimum for sequential
//! reads, doubles on a read past the last prefetch, and starts over after a write; a slow
//! cache below does not hold up the reads (it runs on a host thread).

use crate::support::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// A sparse disk with data scattered through it (nbdkit's test-readahead-copy idea).
fn scattered_disk(dir: &TempDir, name: &str, size: u64) -> (String, Vec<u8>) {
    let path = dir.str(name);
    let f = fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let pieces: [(u64, usize); 6] = [
        (0, 1),
        (1, 4096),
        (1 << 20, 65536 + 7),
        (5 * (1 << 20) + 333, 100_000),
        (size / 2 - 1, 3),
        (size - 512, 512),
    ];
    for (i, (off, len)) in pieces.iter().enumerate() {
        f.write_all_at(&pattern(100 + i as u64, *len), *off).unwrap();
    }
    drop(f);
    (path.clone(), fs::read(&path).unwrap())
}

fn readahead_copies(args: &[&str], fill_from: Option<&str>, want: &[u8], dir: &TempDir) {
    tool("nbdcopy");
    tool("qemu-img");
    let (o1, o2) = (dir.str("nbdcopy.img"), dir.str("qemu.img"));
    let fill = match fill_from {
        Some(src) => format!("nbdcopy -- {} \"$uri\" || exit 3\n", shell_quote(src)),
        None => String::new(),
    };
    let script = format!(
        "{fill}nbdcopy -- \"$uri\" {} || exit 4\nqemu-img convert -f raw -O raw \"$nbd\" {} || exit 5\n",
        shell_quote(&o1),
        shell_quote(&o2)
    );
    let mut all = vec!["--filter=readahead"];
    all.extend_from_slice(args);
    let o = run_captive_timeout(&all, &script, Duration::from_secs(120));
    assert_success(&o);
    assert!(
        !stderr(&o).contains("won't do anything"),
        "the plugin caches natively: readahead must be active\n{}",
        describe(&o)
    );
    assert!(
        fs::read(&o1).unwrap() == want,
        "nbdcopy through readahead changed the data"
    );
    assert!(
        fs::read(&o2).unwrap() == want,
        "qemu-img convert through readahead changed the data"
    );
}

#[test]
fn readahead_copy_is_identical_file() {
    let dir = TempDir::new("racf");
    let (img, want) = scattered_disk(&dir, "src.img", 32 << 20);
    readahead_copies(&["file", &img], None, &want, &dir);
}

#[test]
fn readahead_copy_is_identical_memory() {
    let dir = TempDir::new("racm");
    let (img, want) = scattered_disk(&dir, "src.img", 32 << 20);
    readahead_copies(&["memory", "32M"], Some(&img), &want, &dir);
}

#[test]
fn readahead_prefetches_the_next_window() {
    let dir = TempDir::new("ra");
    // The cache requests run on a host thread, which may wait behind the client's reads for
    // the recorder's one instance. The client pauses before the write, so that the window
    // pending then has run (a request for a range still waiting is not queued again), and at
    // the end, so that the last request reaches the layer below before the connection closes.
    let disk = dir.str("disk.img");
    fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let py = r#"
import time
for i in range(10):
    h.pread(512, i * 512)
h.pread(512, 100000)
h.pread(512, 200000)
time.sleep(1)
h.pwrite(b"w" * 512, 0)
h.pread(512, 250000)
time.sleep(1)
"#;
    let o = run_captive(
        &[
            "-v",
            "--filter=readahead",
            &filter_arg("recorder"),
            "file",
            &disk,
            "recorder=below",
        ],
        &nbdsh(&dir, "ra", py),
    );
    assert_success(&o);
    let calls = recorded(&stderr(&o));
    let data: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("below: pread") || c.starts_with("below: pwrite"))
        .collect();
    let mut caches: Vec<&String> = calls.iter().filter(|c| c.starts_with("below: cache")).collect();
    let mut want_data = Vec::new();
    let mut want_caches = Vec::new();
    for i in 0..10u64 {
        want_data.push(format!("below: pread count=512 offset={}", i * 512));
        // Sequential reads keep the minimum window.
        want_caches.push(format!("below: cache count=32768 offset={}", i * 512 + 512));
    }
    // A read past the end of the previous prefetch doubles the window.
    want_data.push("below: pread count=512 offset=100000".into());
    want_caches.push("below: cache count=65536 offset=100512".into());
    want_data.push("below: pread count=512 offset=200000".into());
    want_caches.push("below: cache count=131072 offset=200512".into());
    // A write starts the window over.
    want_data.push("below: pwrite count=512 offset=0".into());
    want_data.push("below: pread count=512 offset=250000".into());
    want_caches.push("below: cache count=32768 offset=250512".into());
    assert_eq!(data, want_data.iter().collect::<Vec<_>>(), "{}", describe(&o));
    // In the order the host thread ran them, which need not follow the reads.
    caches.sort();
    want_caches.sort();
    assert_eq!(caches, want_caches.iter().collect::<Vec<_>>(), "{}", describe(&o));
}

/// The cache request runs off the request path: over a layer whose cache takes 800 ms, a
/// sequential read still returns at once, and the cache does reach the layer below.
#[test]
fn a_slow_cache_below_does_not_hold_up_reads() {
    let dir = TempDir::new("ra-slow");
    let py = r#"
import time
t = time.monotonic()
for i in range(8):
    h.pread(4096, i * 4096)
print("reads took", time.monotonic() - t)
time.sleep(1)
"#;
    let o = run_captive(
        &[
            "-v",
            "--filter=readahead",
            &filter_arg("recorder"),
            &guest_arg("sleepy"),
            "16M",
            "delay-ms=0",
            "cache-delay-ms=800",
            "recorder=below",
        ],
        &nbdsh(&dir, "ra-slow", py),
    );
    assert_success(&o);
    let took: f64 = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("reads took "))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no timing printed\n{}", describe(&o)));
    // In line, eight reads would wait for at least one 800 ms cache each.
    assert!(
        took < 0.8,
        "8 reads took {took:.3} s behind the cache\n{}",
        describe(&o)
    );
    let caches = recorded(&stderr(&o))
        .into_iter()
        .filter(|c| c.starts_with("below: cache"))
        .count();
    assert!(
        caches >= 1,
        "no cache request reached the layer below\n{}",
        describe(&o)
    );
}
