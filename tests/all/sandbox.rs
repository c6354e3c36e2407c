//! Sandboxing: misbehaving guest components must fail single requests, never
//! the server; capabilities are not granted. (The memory plugin's ENOSPC under
//! `--memory-limit` is in plugin_memory.rs.)

use crate::support::nbd::*;
use crate::support::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn hostile_server() -> Server {
    let w = guest("hostile.wasm");
    Server::start(&["--call-timeout=1", "--memory-limit=64M", w.to_str().unwrap()])
}

#[track_caller]
fn read0_works(c: &mut RawClient, when: &str) {
    match c.read(0, 512) {
        Ok(d) => assert_eq!(d.len(), 512),
        Err(e) => panic!("read at 0 failed with {e} {when}"),
    }
}

#[test]
fn hostile_guest_is_contained() {
    let mut srv = hostile_server();
    let mut c = RawClient::open(&srv.sock, true, false);
    assert_eq!(c.size, MIB, "hostile.wasm serves 1 MiB");
    read0_works(&mut c, "at first");

    // Trap.
    assert_eq!(c.read(4096, 512), Err(EIO), "a trapping pread is EIO");
    read0_works(&mut c, "after a trap");

    // Infinite loop: cut off by --call-timeout=1.
    let t = Instant::now();
    let r = c.read(8192, 512);
    let took = t.elapsed();
    assert!(r.is_err(), "endless loop must fail the request");
    assert!(took < Duration::from_secs(10), "call timeout of 1 s took {took:?}");
    read0_works(&mut c, "after a timeout");

    // Unbounded memory growth: stopped by --memory-limit.
    let t = Instant::now();
    assert!(c.read(12288, 512).is_err(), "memory bomb must fail the request");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "memory bomb took {:?}",
        t.elapsed()
    );
    read0_works(&mut c, "after a memory bomb");

    // Writes past the read buffer.
    assert!(
        c.read(16384, 512).is_err(),
        "out-of-bounds buffer write must fail the request"
    );
    read0_works(&mut c, "after a buffer overrun");

    // Reads past the read buffer, and past a write's payload: the host's views of its
    // buffers are bounded however the guest asks for them.
    assert_eq!(c.read(45056, 512), Err(EIO), "an out-of-bounds buffer read is EIO");
    read0_works(&mut c, "after a read-buffer overread");
    assert_eq!(c.write(45056, &[7; 512]), EIO, "an out-of-bounds payload read is EIO");
    read0_works(&mut c, "after a write-buffer overread");

    // The same connection keeps working for repeated failures.
    assert_eq!(c.read(4096, 512), Err(EIO));
    read0_works(&mut c, "after a second trap");

    // Server alive; new clients fine.
    assert!(srv.alive(), "server died\n{}", srv.stderr());
    let pid = fs::read_to_string(&srv.pidfile).unwrap();
    assert!(std::path::Path::new(&format!("/proc/{}", pid.trim())).exists());
    let mut d = RawClient::open(&srv.sock, false, false);
    read0_works(&mut d, "on a new connection");
    assert_eq!(d.read(4096, 512), Err(EIO), "simple replies: trap is EIO too");
    read0_works(&mut d, "on a new connection after a trap");
    drop(c);
    drop(d);
    let st = srv.stop();
    assert_eq!(st.signal(), None, "server must not die by a signal");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn hostile_guest_with_nbdsh() {
    let nbdsh = tool("/usr/bin/nbdsh");
    let dir = TempDir::new("hostsh");
    let py = r#"
import errno
assert len(h.pread(512, 0)) == 512
try:
    h.pread(512, 4096)
    raise Exception("trap was not reported")
except nbd.Error as e:
    assert e.errnum == errno.EIO, (e.errnum, e)
assert len(h.pread(512, 0)) == 512
for off in (8192, 12288, 16384):
    try:
        h.pread(512, off)
        raise Exception("pread at %d succeeded" % off)
    except nbd.Error as e:
        pass
    assert len(h.pread(512, 0)) == 512
print("CONTAINED")
"#;
    let f = dir.join("h.py");
    fs::write(&f, py).unwrap();
    let w = guest("hostile.wasm");
    let script = format!(
        "{} -u \"$uri\" -c \"$(cat {})\"",
        nbdsh.display(),
        shell_quote(f.to_str().unwrap())
    );
    let o = run_captive(
        &["--call-timeout=1", "--memory-limit=64M", w.to_str().unwrap()],
        &script,
    );
    assert!(assert_success(&o).contains("CONTAINED"), "{}", describe(&o));
}

#[test]
fn guest_path_not_a_component() {
    // A file that is not a wasm component: clean error, exit 1.
    let dir = TempDir::new("notwasm");
    let p = dir.str("junk.wasm");
    fs::write(&p, b"\0asm but not really").unwrap();
    let o = run_captive(&[&p], "echo RAN");
    assert_exit1(&o);
    assert!(!stdout(&o).contains("RAN"));
    assert!(stderr(&o).contains("junk.wasm"), "{}", describe(&o));
}

/// A plugin's only way to the filesystem is its grants: everything beyond them is refused
/// (ungranted keys, the wrong kind, `..`, absolute and nested names, writing a read-only
/// grant), the host stays up, and the granted file is served intact.
#[test]
fn grants_refuse_everything_beyond_them() {
    let dir = TempDir::new("grant-probe");
    fs::create_dir_all(dir.join("granted/sub")).unwrap();
    let data = pattern(7, 1 << 20);
    fs::write(dir.join("granted/disk.img"), &data).unwrap();
    fs::write(dir.join("outside.img"), b"secret\n").unwrap();
    fs::write(dir.join("granted/sub/inner.img"), b"inner\n").unwrap();
    let probe = guest("grant_probe.wasm");
    let (file, granted) = (dir.str("granted/disk.img"), dir.str("granted"));
    let copy = dir.str("copy.img");
    let out = run_captive(
        &[
            "-v",
            "-r",
            probe.to_str().unwrap(),
            &format!("file={file}"),
            &format!("dir={granted}"),
        ],
        &format!("nbdcopy \"$uri\" {copy}"),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(fs::read(&copy).unwrap(), data, "the granted file must be served intact");
    let log = stderr(&out);
    let refused = log
        .lines()
        .filter(|l| l.contains("grant-probe:") && l.contains(": refused ("))
        .count();
    assert!(refused >= 11, "every attempt must be logged as refused:\n{log}");
    assert!(!log.contains("SUCCEEDED"), "an attempt got through:\n{log}");
    assert!(
        !log.contains("secret") && !log.contains("inner\n"),
        "outside bytes leaked:\n{log}"
    );
}

#[test]
fn read_into_fills_the_buffer_it_is_given() {
    // grant-probe reads its granted file into a buffer of its own at get-ready (no request
    // buffer exists then) and logs whether it holds the file's bytes.
    let dir = TempDir::new("readinto");
    fs::create_dir(dir.join("granted")).unwrap();
    fs::write(dir.join("granted/disk.img"), pattern(9, 65536)).unwrap();
    let probe = guest("grant_probe.wasm");
    let o = run_captive(
        &[
            "-v",
            "-r",
            probe.to_str().unwrap(),
            &format!("file={}", dir.str("granted/disk.img")),
            &format!("dir={}", dir.str("granted")),
        ],
        "true",
    );
    assert_success(&o);
    assert!(
        stderr(&o).contains("grant-probe: read-into a scratch buffer: matches"),
        "{}",
        describe(&o)
    );
}

#[test]
fn directory_grant_follows_no_link_out_of_the_directory() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("dirlinks");
    let (served, outside) = (dir.join("served"), dir.join("outside"));
    fs::create_dir(&served).unwrap();
    fs::create_dir(&outside).unwrap();
    let mut secret = b"SECRET".to_vec();
    secret.resize(65536, 0);
    fs::write(outside.join("secret.img"), &secret).unwrap();
    fs::write(served.join("plain.img"), pattern(4, 65536)).unwrap();
    symlink("../outside/secret.img", served.join("escape.img")).unwrap();
    symlink("/etc/passwd", served.join("passwd.img")).unwrap();
    symlink(outside.join("secret.img"), served.join("absolute.img")).unwrap();
    symlink("plain.img", served.join("inside.img")).unwrap();

    let ds = served.to_str().unwrap();
    let try_read = |name: &str| {
        format!(
            "if nbdcopy \"nbd+unix:///{name}?socket=$unixsocket\" - | head -c 6 | grep -q SECRET; then echo LEAKED-{name}; fi; \
             if nbdinfo --size \"nbd+unix:///{name}?socket=$unixsocket\" >/dev/null 2>&1; then echo SERVED-{name}; fi"
        )
    };
    let script = format!(
        "nbdinfo --list --json \"$uri\"; {}; {}; {}; {}; echo DONE",
        try_read("escape.img"),
        try_read("passwd.img"),
        try_read("absolute.img"),
        try_read("inside.img"),
    );
    let o = run_captive(&["file", &format!("dir={ds}")], &script);
    let out = assert_success(&o);
    assert!(out.contains("DONE"), "{}", describe(&o));
    let mut listed = export_names(&out);
    listed.sort();
    assert_eq!(
        listed,
        ["inside.img", "plain.img"],
        "only entries beneath the directory are listed\n{}",
        describe(&o)
    );
    assert!(
        !out.contains("LEAKED"),
        "bytes from outside the directory were served\n{}",
        describe(&o)
    );
    for name in ["escape.img", "passwd.img", "absolute.img"] {
        assert!(
            !out.contains(&format!("SERVED-{name}")),
            "{name} was served\n{}",
            describe(&o)
        );
    }
    assert!(
        out.contains("SERVED-inside.img"),
        "a link that stays inside is served\n{}",
        describe(&o)
    );
}

#[test]
fn compiled_code_cache_is_not_used_when_others_can_write_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cache");
    let cache = dir.join("nbdbox");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = std::process::Command::new(bin());
    c.args(["-v", "-U", "-", "memory", "1M", "--run", "true"])
        .env("XDG_CACHE_HOME", dir.path.as_os_str());
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert_success(&o);
    let planted: Vec<_> = fs::read_dir(&cache).unwrap().collect();
    assert!(
        planted.is_empty(),
        "compiled code was written to a 0777 directory: {planted:?}"
    );
    assert!(
        stderr(&o).contains("not using the compiled-component cache"),
        "-v must say why the cache is not used\n{}",
        describe(&o)
    );

    // A private cache directory is used.
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
    let mut c = std::process::Command::new(bin());
    c.args(["-U", "-", "memory", "1M", "--run", "true"])
        .env("XDG_CACHE_HOME", dir.path.as_os_str());
    assert_success(&run_with_timeout(c, DEFAULT_TIMEOUT));
    assert!(
        fs::read_dir(&cache).unwrap().next().is_some(),
        "the private cache was not used"
    );
}

#[test]
fn network_grants_refuse_everything_beyond_them() {
    // net-probe, granted one nginx origin and one origin that holds every request, tries
    // every way past them at get-ready; then it serves zeros.
    let dir = TempDir::new("netprobe");
    let root = dir.join("root");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("disk.img"), vec![0u8; 65536]).unwrap();
    fs::write(root.join("huge.bin"), vec![7u8; 3 << 20]).unwrap();
    let nginx = Nginx::start(&dir, &root, None);
    let slow = FlakyOrigin::start(&dir, &root.join("disk.img"), "stall", 1, 0);
    let probe = guest("net_probe.wasm");
    let start = Instant::now();
    let o = run_captive(
        &[
            "-v",
            probe.to_str().unwrap(),
            "64k",
            &format!("url={}", nginx.url("disk.img")),
            &format!("slow={}", slow.url()),
        ],
        "nbdinfo --size \"$uri\"",
    );
    assert_eq!(assert_success(&o).trim(), "65536", "{}", describe(&o));
    let log = stderr(&o);
    assert!(!log.contains("SUCCEEDED"), "an attempt got through:\n{log}");
    let refused = log
        .lines()
        .filter(|l| l.contains("net-probe:") && l.contains(": refused ("))
        .count();
    assert!(
        refused >= 12,
        "every attempt must be logged as refused ({refused}):\n{log}"
    );
    assert!(log.contains("the granted URL answers: 65536 bytes"), "{log}");
    // The held request was cut by its timeout, not waited for.
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
    // Nothing reached another host or the huge file through a smuggled header.
    assert!(!nginx.log().contains("127.0.0.2"), "{}", nginx.log());
}
