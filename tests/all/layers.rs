//! What holds between layers, whatever they are: the order calls reach each layer (nbdkit's
//! test-layers), the gate every call passes (a filter's own calls are validated and emulated
//! exactly as a client's, nbdkit's server/backend.c), where instances live (a layer's
//! placement does not serialize the others), what a trap costs (a pooled layer's instance,
//! or a shared layer's state, never silently), and the thread model a filter imposes.
//!
//! Test components: `recorder` logs every call it handles (`recorder NAME: CALL`, visible
//! with `-v`); `faulty` injects failures and traps; `prober` makes one call of its own to
//! the layer below before each read; `minimal` is a shared RAM disk with only pread, pwrite
//! and flush, logging every call that reaches it; `sleepy` waits before each read, as a
//! network plugin would.

use crate::support::nbd::EIO;
use crate::support::*;
use std::fs;
use std::time::{Duration, Instant};

/// Shell fragment running a Python program with Debian's python and libnbd;
/// the program gets the URI as `URI`, and must connect itself (needed to ask
/// for a meta context before connecting).
fn python(dir: &TempDir, name: &str, code: &str) -> String {
    let python = tool("/usr/bin/python3");
    let f = dir.join(&format!("{name}.py"));
    fs::write(&f, format!("import nbd, sys, time, errno\nURI = sys.argv[1]\n{code}")).unwrap();
    format!("{} {} \"$uri\"", python.display(), shell_quote(f.to_str().unwrap()))
}

/// The calls that reached the minimal plugin, in order, as `CALL count=C offset=O flags=F`.
fn minimal_calls(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once("minimal: ").map(|(_, call)| call.to_owned()))
        .collect()
}

/// `nbdbox -v --filter=prober minimal 1M action=ACTION [extra]` running `py` in nbdsh.
fn probe(action: &str, extra: &[&str], py: &str) -> std::process::Output {
    let dir = TempDir::new("probe");
    let mut args = vec!["-v".to_owned(), filter_arg("prober"), guest_arg("minimal"), "1M".into()];
    args.push(format!("action={action}"));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_captive(&args, &nbdsh(&dir, action, py))
}

/// nbdsh snippet: run `expr` and print `ok` or the errno name.
fn outcome(expr: &str) -> String {
    format!("try:\n    {expr}\n    print('ok')\nexcept nbd.Error as e:\n    print(e.errno)\n")
}

#[test]
fn a_filters_zero_on_a_plugin_without_zero_is_emulated() {
    let py = "h.pwrite(b'\\xff' * 4096, 0)\nprint('zeros' if h.pread(4096, 0) == bytes(4096) else 'data')\n";
    let o = probe("zero", &[], py);
    assert_eq!(assert_success(&o).trim(), "zeros", "{}", describe(&o));
    let err = stderr(&o);
    assert!(err.contains("prober: zero -> ok"), "{}", describe(&o));
    // The client's write, then the zeroes the host wrote for the filter's zero, then the read.
    let calls = minimal_calls(&err);
    let writes = calls
        .iter()
        .filter(|c| c.starts_with("pwrite count=4096 offset=0 "))
        .count();
    assert_eq!(writes, 2, "the zero became a write of zeroes: {calls:#?}");
}

#[test]
fn a_filters_fua_write_on_a_plugin_that_emulates_fua_is_flushed() {
    let o = probe("fua-write", &[], "print(h.pread(4096, 0) == b'\\xab' * 4096)\n");
    assert_eq!(assert_success(&o).trim(), "True", "{}", describe(&o));
    let calls = minimal_calls(&stderr(&o));
    let write = calls
        .iter()
        .position(|c| c.starts_with("pwrite count=4096 offset=0 "))
        .unwrap_or_else(|| panic!("the write never reached the plugin: {calls:#?}"));
    assert!(
        !calls[write].contains("FUA"),
        "FUA reached a plugin that only emulates it: {calls:#?}"
    );
    assert!(
        calls[write + 1].starts_with("flush "),
        "the FUA must become a flush right after the write: {calls:#?}"
    );
}

#[test]
fn a_filters_cache_on_a_plugin_that_emulates_cache_reads() {
    let o = probe("cache", &["cache=emulate"], &outcome("h.pread(4096, 8192)"));
    assert_eq!(assert_success(&o).trim(), "ok", "{}", describe(&o));
    let reads = minimal_calls(&stderr(&o))
        .into_iter()
        .filter(|c| c.starts_with("pread count=4096 offset=8192 "))
        .count();
    assert_eq!(reads, 2, "the cache request is emulated by reading\n{}", describe(&o));

    // Without cache support, the filter's cache is refused before the plugin sees it.
    let o = probe("cache", &[], &outcome("h.pread(4096, 8192)"));
    assert_eq!(assert_success(&o).trim(), "EINVAL", "{}", describe(&o));
    let err = stderr(&o);
    assert!(err.contains("prober: cache -> Errno::Einval"), "{}", describe(&o));
    assert!(
        err.contains("refused: minimal: cache is not supported"),
        "{}",
        describe(&o)
    );
}

/// A filter that floods `background.cache` gets a bounded queue that drops the oldest: of
/// 10,000 requests (512 bytes at 0, 512, 1024, ...) over a cache that takes a second, the
/// ones that reach the plugin after the flood are among the newest 64, not the next in line
/// of an unbounded queue, and the client's reads go on.
#[test]
fn a_flood_of_background_caches_keeps_only_the_newest() {
    let dir = TempDir::new("flood");
    let py = "print(len(h.pread(4096, 0)))\nimport time\ntime.sleep(2.5)\nprint(len(h.pread(4096, 4096)))\n";
    let o = run_captive(
        &[
            "-v",
            &filter_arg("prober"),
            &filter_arg("recorder"),
            &guest_arg("sleepy"),
            "16M",
            "delay-ms=0",
            "cache-delay-ms=1000",
            "action=flood",
            "recorder=below",
        ],
        &nbdsh(&dir, "flood", py),
    );
    assert_eq!(assert_success(&o).trim(), "4096\n4096", "{}", describe(&o));
    let offsets: Vec<u64> = recorded(&stderr(&o))
        .iter()
        .filter_map(|c| c.strip_prefix("below: cache count=512 offset="))
        .map(|o| o.parse().unwrap())
        .collect();
    // Each of the two host threads takes one request while the flood goes on, and is busy
    // with it for a second; after that only the newest 64 are left to take.
    let newest = (10_000 - 64) * 512;
    let older = offsets.iter().filter(|&&o| o < newest).count();
    assert!(
        older <= 2,
        "more requests from before the newest 64 ran than there are host threads: {offsets:?}\n{}",
        describe(&o)
    );
    assert!(
        offsets.iter().any(|&o| o >= newest),
        "none of the newest requests ran: {offsets:?}\n{}",
        describe(&o)
    );
}

#[test]
fn a_filters_out_of_range_calls_never_reach_the_plugin() {
    for action in ["read-past-end", "write-past-end"] {
        let o = probe(action, &[], &outcome("h.pread(4096, 0)"));
        assert_eq!(assert_success(&o).trim(), "EINVAL", "{action}\n{}", describe(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("prober: {action} -> Errno::Einval")),
            "{}",
            describe(&o)
        );
        let call = if action == "read-past-end" { "pread" } else { "pwrite" };
        assert!(
            err.contains(&format!(
                "refused: minimal: {call} of 4096 bytes at 1046528 is outside its size"
            )),
            "the gate says what it refused\n{}",
            describe(&o)
        );
        let past_end = (1 << 20) - 2048;
        let reached: Vec<String> = minimal_calls(&err)
            .into_iter()
            .filter(|c| c.contains(&format!("offset={past_end} ")))
            .collect();
        assert!(reached.is_empty(), "{action} reached the plugin: {reached:?}");
    }
}

#[test]
fn configuration_cannot_change_while_serving() {
    // The filter's next.config while serving is refused; the plugin keeps its disk.
    let py = format!(
        "h.pwrite(b'x' * 512, 0)\n{}print(h.get_size())\n",
        outcome("h.pread(512, 0)")
    );
    let o = probe("reconfigure", &[], &py);
    let out = assert_success(&o);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["EINVAL", "1048576"],
        "{}",
        describe(&o)
    );
    assert!(
        stderr(&o).contains("configuration cannot change while the server is serving"),
        "{}",
        describe(&o)
    );
}

#[test]
fn a_trap_in_a_shared_plugin_fails_every_request_instead_of_serving_zeros() {
    let srv = Server::start(&[&guest_arg("minimal"), "1M", "trap-offset=8192"]);
    let dir = TempDir::new("sharedtrap");
    let py = format!(
        "h.pwrite(b'D' * 512, 0)\n{}{}{}",
        outcome("h.pread(512, 8192)"),
        outcome("h.pread(512, 0)"),
        outcome("h.pwrite(b'E' * 512, 0)")
    );
    let script = nbdsh(&dir, "trap", &py).replace("$uri", &srv.uri());
    let o = run_with_timeout(shell(&script), DEFAULT_TIMEOUT);
    assert_eq!(
        assert_success(&o).lines().collect::<Vec<_>>(),
        ["EIO", "EIO", "EIO"],
        "{}",
        describe(&o)
    );
    // A new client cannot reach a fresh, empty disk either.
    let o = run_with_timeout(shell(&format!("nbdinfo --size '{}'", srv.uri())), DEFAULT_TIMEOUT);
    assert!(
        !o.status.success(),
        "a new client was served after the data was lost\n{}",
        describe(&o)
    );
    let log = srv.stderr();
    assert!(
        log.contains("state is lost"),
        "the log must say the data is lost:\n{log}"
    );
    // The server itself goes on.
    let mut srv = srv;
    assert!(srv.alive());
}

#[test]
fn a_trap_in_a_pooled_layer_costs_only_its_request() {
    // faulty keeps no shared state: its trap replaces its instance and the connection goes on.
    let dir = TempDir::new("pooledtrap");
    let img = dir.join("disk.img");
    fs::write(&img, pattern(3, 1 << 20)).unwrap();
    let py = format!("{}{}", outcome("h.pread(512, 4096)"), outcome("h.pread(512, 0)"));
    let o = run_captive(
        &[&filter_arg("faulty"), "file", img.to_str().unwrap(), "trap-offset=4096"],
        &nbdsh(&dir, "trap", &py),
    );
    assert_eq!(
        assert_success(&o).lines().collect::<Vec<_>>(),
        ["EIO", "ok"],
        "{}",
        describe(&o)
    );
    assert!(stderr(&o).contains("the instance is replaced"), "{}", describe(&o));
}

/// nbdsh snippet: `n` reads of 4 KiB in flight at once on one connection; prints the seconds
/// until all completed.
fn parallel_reads(n: usize) -> String {
    format!(
        "import time\nbufs = [nbd.Buffer(4096) for _ in range({n})]\nt = time.monotonic()\n\
         for i, b in enumerate(bufs):\n    h.aio_pread(b, i * 4096)\n\
         while h.aio_in_flight() > 0:\n    h.poll(-1)\nprint(time.monotonic() - t)\n"
    )
}

#[test]
fn a_waiting_plugin_serves_requests_of_one_connection_in_parallel() {
    // Eight reads of 300 ms each: one at a time they take 2.4 s; overlapped, a little over 0.3 s.
    let dir = TempDir::new("lanes");
    let o = run_captive(
        &[&guest_arg("sleepy"), "1G", "delay-ms=300"],
        &nbdsh(&dir, "lanes", &parallel_reads(8)),
    );
    let elapsed: f64 = assert_success(&o).trim().parse().unwrap();
    assert!(
        elapsed < 1.5,
        "the reads did not overlap: {elapsed:.2} s\n{}",
        describe(&o)
    );
}

#[test]
fn a_filter_above_does_not_serialize_connections() {
    // exitlast counts connections with a host counter instead of keeping one instance for all
    // of them: two clients' slow reads overlap.
    let dir = TempDir::new("twoclients");
    let read = nbdsh(&dir, "read", "h.pread(4096, 0)\n");
    let script =
        format!("t0=$(date +%s%N); ({read}) & ({read}) & wait; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 ))");
    let o = run_captive(
        &["--filter=exitlast", &guest_arg("sleepy"), "1G", "delay-ms=1500"],
        &script,
    );
    let millis: u64 = assert_success(&o).trim().parse().unwrap();
    assert!(
        millis < 2800,
        "the two clients took turns: {millis} ms\n{}",
        describe(&o)
    );
}

#[test]
fn a_slow_request_holds_up_only_its_own_connection() {
    // Client A's read waits 3 s in the plugin; client B's connection and read meanwhile are
    // served by another instance at once.
    let srv = Server::start(&[&guest_arg("sleepy"), "1G", "delay-ms=3000"]);
    let dir = TempDir::new("slowone");
    let slow = nbdsh(&dir, "slow", "h.pread(4096, 0)\n").replace("$uri", &srv.uri());
    let mut a = shell(&slow).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let o = run_with_timeout(shell(&format!("nbdinfo --size '{}'", srv.uri())), DEFAULT_TIMEOUT);
    assert_eq!(assert_success(&o).trim(), "1073741824");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "another client waited for the slow one: {:?}",
        start.elapsed()
    );
    assert!(a.wait().unwrap().success());
}

// ---------------------------------------------------------------------------
// Layer call order (nbdkit's test-layers)
// ---------------------------------------------------------------------------

#[test]
fn call_order_through_three_layers() {
    let dir = TempDir::new("layers");
    let r = filter_arg("recorder");
    let script = python(
        &dir,
        "ops",
        r#"
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(URI)
h.pwrite(b"L" * 512, 1024)
assert h.pread(512, 1024) == b"L" * 512, "data through three filters"
h.flush()
h.trim(512, 2048)
h.zero(512, 4096)
seen = []
h.block_status(65536, 0, lambda meta, off, ents, err: seen.append(meta))
assert seen == ["base:allocation"], seen
h.cache(4096, 8192)
h.shutdown()
print("done ok")
"#,
    );
    let o = run_captive(
        &[
            "-v",
            &r,
            &r,
            &r,
            "memory",
            "1M",
            "recorder=f3",
            "recorder=f2",
            "recorder=f1",
        ],
        &script,
    );
    assert_eq!(value(&assert_success(&o), "done"), "ok", "{}", describe(&o));

    let outer_in = ["f3", "f2", "f1"];
    let inner_out = ["f1", "f2", "f3"];
    let phase = |order: &[&str], call: &str| -> Vec<String> { order.iter().map(|f| format!("{f}: {call}")).collect() };
    let phases: Vec<(&str, Vec<String>)> = vec![
        ("config-complete", phase(&outer_in, "config-complete")),
        ("get-ready", phase(&inner_out, "get-ready")),
        ("open", phase(&inner_out, "open")),
        ("prepare", phase(&inner_out, "prepare")),
        ("get-size", phase(&outer_in, "get-size")),
        ("capabilities", phase(&outer_in, "capabilities")),
        ("pwrite", phase(&outer_in, "pwrite count=512 offset=1024")),
        ("pread", phase(&outer_in, "pread count=512 offset=1024")),
        ("flush", phase(&outer_in, "flush")),
        ("trim", phase(&outer_in, "trim count=512 offset=2048")),
        ("zero", phase(&outer_in, "zero count=512 offset=4096")),
        ("extents", phase(&outer_in, "extents count=65536 offset=0")),
        ("cache", phase(&outer_in, "cache count=4096 offset=8192")),
        ("finalize", phase(&outer_in, "finalize")),
        ("close", phase(&outer_in, "close")),
    ];
    let got = recorded(&stderr(&o));
    // Phase by phase first, for a readable failure.
    let mut rest = got.as_slice();
    for (name, want) in &phases {
        let n = want.len().min(rest.len());
        assert_eq!(
            &rest[..n],
            &want[..],
            "phase {name}: wrong calls or order (nbdkit §4.4)\nall recorded calls: {got:#?}"
        );
        rest = &rest[n..];
    }
    assert!(rest.is_empty(), "unexpected calls after close: {rest:?}");
}

// ---------------------------------------------------------------------------
// A trapping filter
// ---------------------------------------------------------------------------

#[test]
fn trapping_filter_fails_only_that_request() {
    let dir = TempDir::new("trap");
    let (img, data) = disk(&dir, "disk.img", 65, 1 << 20);
    let fa = filter_arg("faulty");
    let mut srv = Server::start(&[&fa, "file", &img, "trap-offset=4096"]);

    let mut c = RawClient::open(&srv.sock, false, false);
    assert_eq!(c.read(4096, 512), Err(EIO), "a read that traps in a filter gets EIO");
    assert_eq!(
        c.read(0, 512).expect("the next read on the same connection must work"),
        &data[..512]
    );
    assert_eq!(c.read(8192, 4096).unwrap(), &data[8192..12288]);
    assert_eq!(c.write(16384, b"after the trap"), 0);
    c.disconnect();

    let mut c2 = RawClient::open(&srv.sock, false, false);
    assert_eq!(
        c2.read(16384, 14).unwrap(),
        b"after the trap",
        "a new connection sees the data"
    );
    assert_eq!(
        c2.read(4096, 512),
        Err(EIO),
        "it traps again, and again only that request fails"
    );
    assert_eq!(c2.read(512, 512).unwrap(), &data[512..1024]);
    c2.disconnect();
    assert!(
        srv.alive(),
        "the server must survive a trapping filter\n{}",
        srv.stderr()
    );

    let err = srv.stderr();
    let trap_lines: Vec<&str> = err.lines().filter(|l| l.contains("trapped")).collect();
    assert!(!trap_lines.is_empty(), "the trap must be logged:\n{err}");
    assert!(
        trap_lines.iter().all(|l| l.contains("faulty")),
        "the log must name the layer that trapped (faulty):\n{err}"
    );
}

// ---------------------------------------------------------------------------
// Thread model
// ---------------------------------------------------------------------------

#[test]
fn dump_plugin_thread_model_includes_filters() {
    let plain = assert_success(&nbdbox(&["--dump-plugin", "memory", "1M"]));
    assert!(plain.lines().any(|l| l == "thread_model=parallel"), "{plain}");
    let out = assert_success(&nbdbox(&["--dump-plugin", "--filter=retry", "memory", "1M"]));
    assert!(out.lines().any(|l| l == "name=memory"), "plugin fields only:\n{out}");
    assert!(out.lines().any(|l| l == "max_thread_model=parallel"), "{out}");
    assert!(
        out.lines().any(|l| l == "thread_model=serialize_requests"),
        "retry forces serialize_requests:\n{out}"
    );
}
