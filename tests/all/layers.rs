//! What holds between layers, whatever they are: the gate every call passes (a filter's own
//! calls are validated and emulated exactly as a client's, nbdkit's server/backend.c), where
//! instances live (a layer's placement does not serialize the others), and what a trap
//! costs (a pooled layer's instance, or a shared layer's state, never silently).
//!
//! Test components: `prober` makes one call of its own to the layer below before each read;
//! `minimal` is a shared RAM disk with only pread, pwrite and flush, logging every call that
//! reaches it; `sleepy` waits before each read, as a network plugin would.

use crate::plugin_file::nbdsh;
use crate::support::*;
use std::fs;
use std::time::{Duration, Instant};

fn guest_arg(name: &str) -> String {
    guest(&format!("{name}.wasm")).to_str().unwrap().to_owned()
}

fn filter_arg(name: &str) -> String {
    format!("--filter={}", guest_arg(name))
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
    assert_eq!(ok(&o).trim(), "zeros", "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("prober: zero -> ok"), "{}", show(&o));
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
    assert_eq!(ok(&o).trim(), "True", "{}", show(&o));
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
    assert_eq!(ok(&o).trim(), "ok", "{}", show(&o));
    let reads = minimal_calls(&stderr(&o))
        .into_iter()
        .filter(|c| c.starts_with("pread count=4096 offset=8192 "))
        .count();
    assert_eq!(reads, 2, "the cache request is emulated by reading\n{}", show(&o));

    // Without cache support, the filter's cache is refused before the plugin sees it.
    let o = probe("cache", &[], &outcome("h.pread(4096, 8192)"));
    assert_eq!(ok(&o).trim(), "EINVAL", "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("prober: cache -> Errno::Einval"), "{}", show(&o));
    assert!(err.contains("refused: minimal: cache is not supported"), "{}", show(&o));
}

#[test]
fn a_filters_out_of_range_calls_never_reach_the_plugin() {
    for action in ["read-past-end", "write-past-end"] {
        let o = probe(action, &[], &outcome("h.pread(4096, 0)"));
        assert_eq!(ok(&o).trim(), "EINVAL", "{action}\n{}", show(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("prober: {action} -> Errno::Einval")),
            "{}",
            show(&o)
        );
        let call = if action == "read-past-end" { "pread" } else { "pwrite" };
        assert!(
            err.contains(&format!(
                "refused: minimal: {call} of 4096 bytes at 1046528 is outside its size"
            )),
            "the gate says what it refused\n{}",
            show(&o)
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
    let out = ok(&o);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["EINVAL", "1048576"], "{}", show(&o));
    assert!(
        stderr(&o).contains("configuration cannot change while the server is serving"),
        "{}",
        show(&o)
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
        ok(&o).lines().collect::<Vec<_>>(),
        ["EIO", "EIO", "EIO"],
        "{}",
        show(&o)
    );
    // A new client cannot reach a fresh, empty disk either.
    let o = run_with_timeout(shell(&format!("nbdinfo --size '{}'", srv.uri())), DEFAULT_TIMEOUT);
    assert!(
        !o.status.success(),
        "a new client was served after the data was lost\n{}",
        show(&o)
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
    assert_eq!(ok(&o).lines().collect::<Vec<_>>(), ["EIO", "ok"], "{}", show(&o));
    assert!(stderr(&o).contains("the instance is replaced"), "{}", show(&o));
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
    let elapsed: f64 = ok(&o).trim().parse().unwrap();
    assert!(elapsed < 1.5, "the reads did not overlap: {elapsed:.2} s\n{}", show(&o));
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
    let millis: u64 = ok(&o).trim().parse().unwrap();
    assert!(millis < 2800, "the two clients took turns: {millis} ms\n{}", show(&o));
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
    assert_eq!(ok(&o).trim(), "1073741824");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "another client waited for the slow one: {:?}",
        start.elapsed()
    );
    assert!(a.wait().unwrap().success());
}
