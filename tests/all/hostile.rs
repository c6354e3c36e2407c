//! Hostile components and hostile clients against the real binary: what a component may make
//! the host do (allocate, sleep, log, list), deadlines from the first call into a component,
//! the process-wide memory budget and connection limit, and what a client can make the
//! server hold. The plain traps, loops and memory bombs are in sandbox.rs.

use crate::support::nbd::*;
use crate::support::*;
use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

// Offsets at which a read misbehaves (plugins-wasm/test-plugins/hostile).
const SLEEP_ZERO_AT: u64 = 20480;
const SLEEP_AND_COMPUTE_AT: u64 = 24576;
const SLEEP_FOREVER_AT: u64 = 28672;
const HOST_HOARD_AT: u64 = 32768;
const KEEP_MEMORY_AT: u64 = 36864;
const LOG_FLOOD_AT: u64 = 40960;
const SPIN_AT: u64 = 8192;

fn hostile() -> String {
    guest("hostile.wasm").display().to_string()
}

/// A figure from /proc/PID/status, in KiB (VmRSS, VmHWM, Threads...).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[track_caller]
fn assert_reads(c: &mut RawClient, when: &str) {
    match c.read(0, 512) {
        Ok(d) => assert_eq!(d, vec![0; 512], "{when}"),
        Err(e) => panic!("a read at 0 failed with {e} {when}"),
    }
}

/// A read that must fail, and soon.
#[track_caller]
fn assert_cut_off(c: &mut RawClient, offset: u64, within: Duration) {
    let started = Instant::now();
    let result = c.read(offset, 512);
    let took = started.elapsed();
    assert!(result.is_err(), "the read at {offset} succeeded");
    assert!(took < within, "the read at {offset} took {took:?}");
}

#[test]
fn host_buffers_count_against_the_memory_limit() {
    let mut srv = Server::start(&["--memory-limit=64M", "--call-timeout=10", &hostile()]);
    let mut c = RawClient::open(&srv.sock, true, false);
    assert_reads(&mut c, "at first");
    let before = proc_status(srv.pid, "VmRSS");
    assert_cut_off(&mut c, HOST_HOARD_AT, Duration::from_secs(10));
    let peak = proc_status(srv.pid, "VmHWM");
    // One 32 MiB buffer fits beside the instance's memory, the second does not.
    assert!(
        peak < before + 100 * 1024,
        "the server grew from {before} KiB to a peak of {peak} KiB"
    );
    assert!(srv.stderr().contains("--memory-limit"), "{}", srv.stderr());
    assert_reads(&mut c, "after the hoard");
    assert!(srv.alive());
}

#[test]
fn sleeping_does_not_escape_the_deadline() {
    let srv = Server::start(&["--call-timeout=1", &hostile()]);
    let mut c = RawClient::open(&srv.sock, true, false);
    for offset in [SLEEP_ZERO_AT, SLEEP_AND_COMPUTE_AT, SLEEP_FOREVER_AT] {
        assert_cut_off(&mut c, offset, Duration::from_secs(8));
        assert_reads(&mut c, &format!("after the sleeper at {offset}"));
    }
}

#[test]
fn sigterm_ends_a_server_whose_component_is_busy() {
    let srv = Server::start(&["--call-timeout=600", &hostile()]);
    let mut c = RawClient::open(&srv.sock, true, false);
    c.send_request(0, CMD_READ, SLEEP_AND_COMPUTE_AT, 512, &[]);
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = srv.stop();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_hang_in_configuration_is_cut_off_by_the_deadline() {
    for stage in ["config", "config-complete", "get-ready"] {
        let started = Instant::now();
        let hang = format!("hang={stage}");
        let out = nbdbox(&["-f", "-U", "-", "--call-timeout=1", &hostile(), &hang]);
        assert_exit1(&out);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{stage}: {:?}",
            started.elapsed()
        );
        let err = stderr(&out);
        assert!(err.contains("deadline") || err.contains("timeout"), "{stage}: {err}");
    }
}

#[test]
fn start_code_that_never_ends_is_cut_off_everywhere() {
    let endless = guest("endless_start.wasm").display().to_string();
    let serve = ["-f", "-U", "-", "--call-timeout=1", endless.as_str()];
    let dump = ["--call-timeout=1", "--dump-plugin", endless.as_str()];
    let help = ["--call-timeout=1", endless.as_str(), "--help"];
    for args in [&serve[..], &dump[..], &help[..]] {
        let started = Instant::now();
        let out = nbdbox(args);
        assert_exit1(&out);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{args:?}: {:?}",
            started.elapsed()
        );
        assert!(stderr(&out).contains("endless_start"), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn deadlines_hold_after_daemonizing() {
    let dir = TempDir::new("daemon");
    let (sock, pidfile) = (dir.join("sock"), dir.join("pid"));
    let status = Command::new(bin())
        .args(["-U", sock.to_str().unwrap(), "-P", pidfile.to_str().unwrap()])
        .args(["--call-timeout=1", &hostile()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // The daemon writes its pid file once it serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        match fs::read_to_string(&pidfile) {
            Ok(text) if text.ends_with('\n') => break text.trim().to_owned(),
            _ if Instant::now() > deadline => panic!("no pid file from the daemon"),
            _ => thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut c = RawClient::open(&sock, true, false);
    assert_cut_off(&mut c, SPIN_AT, Duration::from_secs(8));
    assert_reads(&mut c, "after the spin, in a daemon");
    drop(c);
    let _ = Command::new("kill").arg(&pid).status();
}

/// GO until it succeeds, for up to 5 s: a client that left is let go a moment later.
fn go_soon(sock: &std::path::Path) -> RawClient {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match go(sock) {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("GO still refused: {e:?}"),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// GO: Ok, or the error reply's type and message.
fn go(sock: &std::path::Path) -> Result<RawClient, (u32, String)> {
    let mut c = RawClient::connect_fixed(sock);
    c.send_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.read_opt_reply().typ, REP_ACK);
    c.sr = true;
    let replies = c.info_or_go(OPT_GO, "", &[]);
    let last = replies.last().unwrap();
    if last.typ == REP_ACK {
        Ok(c)
    } else {
        Err((last.typ, String::from_utf8_lossy(&last.data).into_owned()))
    }
}

#[test]
fn the_memory_budget_refuses_new_clients_and_spares_the_others() {
    let srv = Server::start(&["--memory-limit=64M", "--memory-budget=150M", &hostile()]);
    // Two clients make their instances hold nearly their whole limit.
    let mut first = go(&srv.sock).unwrap();
    assert_eq!(first.read(KEEP_MEMORY_AT, 512), Ok(vec![0; 512]));
    let mut second = go(&srv.sock).unwrap();
    assert_eq!(second.read(KEEP_MEMORY_AT, 512), Ok(vec![0; 512]));
    // A third instance could not be given its 64M: the client is refused at GO.
    let (reply, message) = go(&srv.sock).map(|_| ()).unwrap_err();
    assert_eq!(reply, REP_ERR_UNKNOWN);
    assert!(message.contains("--memory-budget"), "{message}");
    // Nobody else noticed.
    assert_reads(&mut first, "after a client was refused");
    assert_reads(&mut second, "after a client was refused");
    // A client that leaves makes room: its instance serves the next one.
    first.disconnect();
    let mut third = go_soon(&srv.sock);
    assert_reads(&mut third, "in the instance a client left");
}

#[test]
fn a_memory_limit_larger_than_the_budget_is_refused() {
    let out = nbdbox(&["--memory-limit=2G", "--memory-budget=1G", "memory", "1M"]);
    assert_exit1(&out);
    let err = stderr(&out);
    assert!(
        err.contains("--memory-limit") && err.contains("--memory-budget"),
        "{err}"
    );
}

#[test]
fn the_connection_limit_refuses_at_go_with_a_message() {
    let srv = Server::start(&["--max-connections=2", "memory", "1M"]);
    let mut first = go(&srv.sock).unwrap();
    let second = go(&srv.sock).unwrap();
    // A client may still look around (LIST, INFO) but not be served.
    let (reply, message) = go(&srv.sock).map(|_| ()).unwrap_err();
    assert_eq!(reply, REP_ERR_UNKNOWN);
    assert!(message.contains("--max-connections"), "{message}");
    assert_eq!(first.write(0, &[7; 512]), 0);
    second.disconnect();
    let mut third = go_soon(&srv.sock);
    assert_eq!(third.read(0, 512), Ok(vec![7; 512]));
    assert!(srv.stderr().contains("too many connections"), "{}", srv.stderr());
}

#[test]
fn a_huge_meta_context_query_is_answered_as_it_goes() {
    let srv = Server::start(&["memory", "1M"]);
    let mut c = RawClient::connect_fixed(&srv.sock);
    c.send_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.read_opt_reply().typ, REP_ACK);
    // 64 MiB of queries, each "base:allocation": every one is answered.
    let query = b"base:allocation";
    let queries = (64 << 20) / (4 + query.len()) - 1;
    let mut payload = Vec::with_capacity(64 << 20);
    payload.extend_from_slice(&0u32.to_be_bytes());
    payload.extend_from_slice(&(queries as u32).to_be_bytes());
    for _ in 0..queries {
        payload.extend_from_slice(&(query.len() as u32).to_be_bytes());
        payload.extend_from_slice(query);
    }
    let before = proc_status(srv.pid, "VmRSS");
    c.send_option(OPT_LIST_META_CONTEXT, &payload);
    let mut answered = 0;
    loop {
        let reply = c.read_opt_reply();
        if reply.typ == REP_ACK {
            break;
        }
        assert_eq!(reply.typ, REP_META_CONTEXT);
        answered += 1;
    }
    assert_eq!(answered, queries);
    let peak = proc_status(srv.pid, "VmHWM");
    // The 64 MiB request itself, and little more (the replies are ~5 times its size).
    assert!(
        peak < before + 100 * 1024,
        "the server grew from {before} KiB to a peak of {peak} KiB"
    );
    assert!(go(&srv.sock).is_ok());
}

/// Every NBD_REP_SERVER of one LIST, as (name, description).
fn list(sock: &std::path::Path) -> Vec<(String, String)> {
    let mut c = RawClient::connect_fixed(sock);
    c.send_option(OPT_LIST, &[]);
    let mut exports = Vec::new();
    loop {
        let reply = c.read_opt_reply();
        if reply.typ == REP_ACK {
            return exports;
        }
        assert_eq!(reply.typ, REP_SERVER);
        let len = be32_of(&reply.data) as usize;
        let name = String::from_utf8(reply.data[4..4 + len].to_vec()).unwrap();
        let description = String::from_utf8(reply.data[4 + len..].to_vec()).unwrap();
        exports.push((name, description));
    }
}

#[test]
fn export_names_and_descriptions_are_held_to_the_protocol() {
    let srv = Server::start(&[&hostile(), "exports=broken"]);
    let exports = list(&srv.sock);
    let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["good", "described"]);
    assert_eq!(exports[1].1.len(), 4096, "the 100 KB description is cut");
    assert!(srv.stderr().contains("left out 2"), "{}", srv.stderr());
    // The export's own description (NBD_INFO_DESCRIPTION) is cut too.
    let mut c = RawClient::connect_fixed(&srv.sock);
    let replies = c.info_or_go(OPT_INFO, "good", &[INFO_DESCRIPTION]);
    let description = replies
        .iter()
        .find(|r| r.typ == REP_INFO && be16_of(&r.data) == INFO_DESCRIPTION)
        .expect("a description");
    assert_eq!(description.data.len() - 2, 4096);
    assert!(go(&srv.sock).is_ok());

    let srv = Server::start(&[&hostile(), "exports=million"]);
    assert_eq!(list(&srv.sock).len(), 10_000);
    assert!(srv.stderr().contains("beyond the first 10000"), "{}", srv.stderr());
}

#[test]
fn component_log_lines_cannot_forge_lines_or_flood_the_log() {
    let srv = Server::start(&[&hostile()]);
    let mut c = RawClient::open(&srv.sock, true, false);
    assert_eq!(c.read(LOG_FLOOD_AT, 512), Ok(vec![0; 512]));
    assert_eq!(c.read(LOG_FLOOD_AT, 512), Ok(vec![0; 512]));
    let log = srv.stderr();
    // 800 MB were logged; the allowance lets a few MB through.
    assert!(log.len() < 8 << 20, "{} bytes of log", log.len());
    assert!(log.contains("log lines dropped"), "no note of dropped lines");
    assert!(log.contains("hostile: flood ahead\\nnbdbox: error: forged line\\u{1b}[2J"));
    assert!(log.contains("hostile: on stderr\\u{1b}[2J"));
    assert!(!log.contains('\x1b'), "a raw escape reached the log");
    assert!(log.lines().all(|l| !l.starts_with("nbdbox: error: forged")));
}

#[test]
fn a_fifo_in_a_directory_grant_blocks_nothing() {
    let dir = TempDir::new("fifo");
    fs::write(dir.join("disk"), vec![3; 4096]).unwrap();
    let fifo = dir.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let dir_arg = format!("dir={}", dir.join("").display());
    let srv = Server::start(&["file", &dir_arg]);
    let names: Vec<String> = list(&srv.sock).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["disk"]);
    let started = Instant::now();
    let mut c = RawClient::connect_fixed(&srv.sock);
    let replies = c.info_or_go(OPT_GO, "pipe", &[]);
    assert_ne!(replies.last().unwrap().typ, REP_ACK, "a FIFO was served");
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut c = RawClient::connect_fixed(&srv.sock);
    assert_eq!(c.info_or_go(OPT_GO, "disk", &[]).last().unwrap().typ, REP_ACK);
    c.sr = false;
    assert_eq!(c.read(0, 512), Ok(vec![3; 512]));

    // A FIFO given as a file grant is refused at startup, at once.
    let started = Instant::now();
    let file_arg = format!("file={}", fifo.display());
    assert_exit1(&nbdbox(&["-f", "-U", "-", "file", &file_arg]));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn idle_connections_give_back_large_buffers() {
    let srv = Server::start(&["memory", "64M"]);
    let mut c = RawClient::open(&srv.sock, true, false);
    let baseline = proc_status(srv.pid, "VmRSS");
    let block = vec![1u8; 32 << 20];
    assert_eq!(c.write(0, &block), 0);
    assert_eq!(c.read(0, 32 << 20).unwrap().len(), 32 << 20);
    let busy = proc_status(srv.pid, "VmRSS");
    thread::sleep(Duration::from_millis(800));
    let idle = proc_status(srv.pid, "VmRSS");
    // The memory plugin keeps the 32 MiB written; the request buffer (32 MiB) goes.
    assert!(
        idle + 24 * 1024 < busy,
        "RSS {baseline} KiB at first, {busy} KiB busy, {idle} KiB idle"
    );
    assert_eq!(c.read(0, 512), Ok(vec![1; 512]), "after going idle");
}

/// CPU time the process's live threads have used, from /proc/PID/task/*/schedstat (its first
/// field, in nanoseconds).
fn cpu_time(pid: u32) -> Duration {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let nanos = tasks
        .filter_map(|task| fs::read_to_string(task.unwrap().path().join("schedstat")).ok())
        .map(|stat| stat.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    Duration::from_nanos(nanos)
}

#[test]
fn a_quiet_client_after_a_burst_costs_no_cpu() {
    // Requests one at a time, as fast as the client can: the reader polls between them.
    let srv = Server::start(&["memory", "64M"]);
    let mut c = RawClient::open(&srv.sock, true, false);
    for n in 0..2000u64 {
        assert_eq!(c.read(n % 16 * 4096, 4096), Ok(vec![0; 4096]));
    }
    // Then it stays connected and sends nothing: polling must stop, not spin on.
    let before = cpu_time(srv.pid);
    thread::sleep(Duration::from_secs(1));
    let quiet = cpu_time(srv.pid).saturating_sub(before);
    assert!(quiet < Duration::from_millis(50), "{quiet:?} of CPU in a quiet second");
    // A client that pauses between requests does not keep the reader polling either.
    let before = cpu_time(srv.pid);
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(5));
        assert_eq!(c.read(0, 512), Ok(vec![0; 512]));
    }
    let paced = cpu_time(srv.pid).saturating_sub(before);
    assert!(
        paced < Duration::from_millis(100),
        "{paced:?} of CPU for 100 paced reads"
    );
}

#[test]
fn a_call_timeout_out_of_range_names_the_option() {
    let out = nbdbox(&["--call-timeout=1e20", "memory", "1M"]);
    assert_exit1(&out);
    let err = stderr(&out);
    assert!(err.contains("--call-timeout") && !err.contains("panicked"), "{err}");
}
