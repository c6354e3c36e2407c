//! The built-in `blocksize` filter: requests of any alignment and size from the client
//! reach the plugin aligned to `minblock` and no larger than `maxdata` / `maxlen`, with the
//! same bytes as a client that asked the plugin directly, and as nbdkit's blocksize filter.

use crate::support::*;
use std::fs;

/// Unaligned and oversize requests of every kind.
const MIXED: &str = r#"
h.pwrite(b"a" * 5000, 1000)
h.pwrite(b"b" * 100000, 65537)
h.zero(3000, 300001)
h.zero(200000, 400000)
h.trim(70000, 600100)
h.pwrite(b"c" * 10, h.get_size() - 10)
print("read", h.pread(1000, 999)[:1], len(h.pread(300000, 3)))
h.flush()
"#;

#[test]
fn unaligned_requests_give_the_same_bytes_as_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("bs");
    let (ours_img, data) = disk(&dir, "ours.img", 70, (1 << 20) + 3000);
    let theirs_img = dir.str("theirs.img");
    fs::write(&theirs_img, &data).unwrap();
    for (img, nbdkit) in [(&ours_img, false), (&theirs_img, true)] {
        let args = [
            "--filter=blocksize",
            "file",
            img,
            "minblock=4k",
            "maxdata=16k",
            "maxlen=64k",
        ];
        let script = format!("{} && nbdinfo --size \"$uri\"", nbdsh(&dir, "m", MIXED));
        let o = if nbdkit {
            nbdkit_captive(&args, &script)
        } else {
            run_captive(&args, &script)
        };
        let out = assert_success(&o);
        assert!(out.contains("1048576"), "the size is rounded down to minblock\n{out}");
    }
    let (ours, theirs) = (fs::read(&ours_img).unwrap(), fs::read(&theirs_img).unwrap());
    // The trim of whole blocks leaves what the file plugin makes of it: compare around it.
    let trimmed = 602112..667648;
    assert!(
        ours[..trimmed.start] == theirs[..trimmed.start],
        "bytes before the trim differ"
    );
    assert!(
        ours[trimmed.end..] == theirs[trimmed.end..],
        "bytes after the trim differ"
    );
    assert!(ours[1000..6000].iter().all(|&b| b == b'a'));
    assert!(ours[400000..600000].iter().all(|&b| b == 0));
    assert!(
        ours[ours.len() - 3000..] == data[data.len() - 3000..],
        "the unaligned tail is not served"
    );
}

#[test]
fn the_plugin_sees_only_aligned_requests_within_the_limits() {
    let dir = TempDir::new("bsrec");
    let (img, _) = disk(&dir, "d.img", 71, 1 << 20);
    let o = run_captive(
        &[
            "-v",
            "--filter=blocksize",
            &filter_arg("recorder"),
            "file",
            &img,
            "minblock=512",
            "maxdata=8k",
            "recorder=below",
        ],
        &nbdsh(&dir, "m", MIXED),
    );
    let err = stderr(&o);
    assert_success(&o);
    let calls: Vec<(String, u64, u64)> = recorded(&err)
        .into_iter()
        .filter_map(|c| {
            let c = c.strip_prefix("below: ")?.to_owned();
            let mut words = c.split_whitespace();
            let name = words.next()?.to_owned();
            let count = words.next()?.strip_prefix("count=")?.parse().ok()?;
            let offset = words.next()?.strip_prefix("offset=")?.parse().ok()?;
            Some((name, count, offset))
        })
        .collect();
    assert!(calls.iter().any(|(n, ..)| n == "pwrite"), "no writes recorded\n{err}");
    for (name, count, offset) in &calls {
        assert_eq!(
            (count % 512, offset % 512),
            (0, 0),
            "{name} count={count} offset={offset} is unaligned"
        );
        if name == "pread" || name == "pwrite" {
            assert!(*count <= 8192, "{name} of {count} bytes is over maxdata");
        }
    }
}

#[test]
fn advertised_sizes_match_nbdkit() {
    let dir = TempDir::new("bsinfo");
    let (img, _) = sparse_image(&dir, "s.img", 3 << 20, &[(65536, 8192)]);
    for extra in [&[][..], &["minblock=64k"], &["minblock=512", "maxdata=1k", "maxlen=4k"]] {
        let mut args = vec!["--filter=blocksize", "file", &img];
        args.extend(extra);
        same_as_nbdkit(&args, INFO_AND_MAP);
    }
}

#[test]
fn bad_parameters_are_refused_like_nbdkit() {
    let dir = TempDir::new("bsbad");
    let (img, _) = disk(&dir, "d.img", 72, 1 << 16);
    for bad in ["minblock=3", "minblock=128k", "minblock=4k maxdata=6k", "maxlen=0"] {
        let mut args = vec!["--filter=blocksize", "file", &img];
        args.extend(bad.split(' '));
        let o = run_captive(&args, "true");
        assert_exit1(&o);
        let theirs = nbdkit_captive(&args, "true");
        assert!(!theirs.status.success(), "nbdkit accepts {bad}?");
    }
}
