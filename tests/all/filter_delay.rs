//! The built-in `delay` filter against nbdkit's: each setting delays the calls it names and
//! no others, a fast zero fails at once when asked to, opens wait, the flags are nbdkit's,
//! and a delay longer than the call timeout still succeeds (the host's sleep does not count).

use crate::differential::*;
use crate::support::*;

/// Which calls took at least 0.2 s.
const TIMED: &str = r#"
import time
def slow(label, call):
    t = time.monotonic()
    try:
        call()
        result = "ok"
    except nbd.Error as e:
        result = errno.errorcode.get(e.errnum, e.errnum)
    print(label, result, "slow" if time.monotonic() - t >= 0.2 else "fast")
slow("pread", lambda: h.pread(512, 0))
slow("pwrite", lambda: h.pwrite(b"x" * 512, 0))
slow("zero", lambda: h.zero(512, 0))
slow("zero-fast", lambda: h.zero(512, 0, nbd.CMD_FLAG_FAST_ZERO))
slow("trim", lambda: h.trim(512, 0))
slow("extents", lambda: h.block_status(512, 0, lambda *a: 0))
slow("cache", lambda: h.cache(512, 0))
slow("flush", lambda: h.flush())
"#;

#[test]
fn each_delay_slows_its_calls_as_with_nbdkit() {
    let dir = TempDir::new("delays");
    let script = nbdsh_loose(&dir, "timed", TIMED);
    for (settings, slow) in [
        (&["rdelay=250ms"][..], &["pread"][..]),
        (&["delay-read=250ms"], &["pread"]),
        (&["wdelay=250ms"], &["pwrite", "zero", "zero-fast", "trim"]),
        (&["delay-write=250ms", "delay-extents=250ms"], &["pwrite", "extents"]),
        (
            &["delay-zero=250ms", "delay-cache=250ms"],
            &["zero", "zero-fast", "cache"],
        ),
        (&["delay-trim=250ms"], &["trim"]),
    ] {
        let mut args = vec!["--filter=delay", "memory", "1M"];
        args.extend_from_slice(settings);
        let out = same_as_nbdkit(&args, &script);
        let seen: Vec<&str> = out
            .lines()
            .filter(|l| l.ends_with(" slow"))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(seen, slow, "{settings:?}\n{out}");
    }
}

#[test]
fn an_undelayed_fast_zero_fails_at_once_as_with_nbdkit() {
    let dir = TempDir::new("fastzero");
    let script = nbdsh_loose(&dir, "timed", TIMED);
    let args = [
        "--filter=delay",
        "memory",
        "1M",
        "delay-zero=250ms",
        "delay-fast-zero=false",
    ];
    let out = same_as_nbdkit(&args, &script);
    assert!(
        out.contains("zero-fast ENOTSUP fast") && out.contains("zero ok slow"),
        "{out}"
    );
    // The filter answers fast zeroes itself, so it advertises them even above a plugin that
    // cannot (full's zero is emulated).
    let out = same_as_nbdkit(
        &["--filter=delay", "full", "1M", "delay-zero=1", "delay-fast-zero=0"],
        NBDINFO,
    );
    assert!(out.contains("can_fast_zero: true"), "{out}");
    same_as_nbdkit(&["--filter=delay", "full", "1M"], NBDINFO);
}

#[test]
fn opening_waits() {
    let script = "t=$(date +%s%N); nbdinfo --size \"$uri\" >/dev/null; echo $(( ($(date +%s%N) - t) / 1000000 ))";
    let (ours, theirs) = both(&["--filter=delay", "null", "1M", "delay-open=400ms"], script);
    for out in [ours, theirs] {
        let ms: u64 = out.trim().parse().unwrap();
        assert!(ms >= 400, "nbdinfo took {ms} ms with delay-open=400ms");
    }
}

#[test]
fn a_delay_longer_than_the_call_timeout_is_not_cut_off() {
    let dir = TempDir::new("delaydeadline");
    let py = "outcome('pread', lambda: h.pread(512, 0))\n";
    let o = run_captive(
        &["--call-timeout=1", "--filter=delay", "null", "1M", "rdelay=2"],
        &nbdsh_loose(&dir, "deadline", py),
    );
    let out = assert_success(&o);
    assert!(out.starts_with("pread ok 512:"), "{}", describe(&o));
}

#[test]
fn bad_delays_are_refused_as_by_nbdkit() {
    for bad in [
        "rdelay=abc",
        "rdelay=4294968",
        "delay-write=xms",
        "delay-fast-zero=maybe",
    ] {
        both_refuse(&["--filter=delay", "null", "1M", bad]);
    }
}
