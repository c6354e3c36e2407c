//! The built-in `curl` plugin: a disk image over HTTP(S) from a real nginx, byte for byte as
//! Debian nbdkit's curl plugin serves it; TLS with a test CA; the network grant's limits
//! (the origin only, redirects within it, headers the host owns); answers a server must not
//! get away with (a 200 to a range request, an object replaced mid-copy); and the retry and
//! readahead filters over an origin that fails or is slow on purpose.

use crate::support::*;
use std::fs;

/// A directory with a random disk image of `len` bytes, served as `/disk.img`.
fn image(dir: &TempDir, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let root = dir.join("root");
    fs::create_dir_all(&root).unwrap();
    let data = pattern(77, len);
    fs::write(root.join("disk.img"), &data).unwrap();
    (root, data)
}

/// nbdcopy the export to OUT under nbdbox (or nbdkit) with `args`; the bytes copied.
fn copy(dir: &TempDir, reference: bool, args: &[&str], out: &str) -> Vec<u8> {
    let out = dir.str(out);
    let script = format!("nbdcopy \"$uri\" {}", shell_quote(&out));
    let o = if reference {
        nbdkit_captive(args, &script)
    } else {
        run_captive(args, &script)
    };
    assert_success(&o);
    fs::read(&out).unwrap()
}

#[test]
fn serves_the_image_as_nbdkit_does() {
    tool("nbdcopy");
    let dir = TempDir::new("curl");
    let (root, data) = image(&dir, 8 << 20);
    let nginx = Nginx::start(&dir, &root, None);
    let url = nginx.url("disk.img");
    assert_eq!(copy(&dir, false, &["curl", &url], "ours.img"), data);
    assert_eq!(copy(&dir, true, &["curl", &url], "theirs.img"), data);
    // The magic key, and the same size as nbdkit reports. (nbdkit's curl also offers writes,
    // as HTTP PUTs that servers refuse; ours is read-only.)
    let info = "nbdinfo --json \"$uri\" | grep -E '\"export-size\"'";
    let ours = assert_success(&run_captive(&["curl", &format!("url={url}")], info));
    let theirs = assert_success(&nbdkit_captive(&["curl", &format!("url={url}")], info));
    assert_eq!(ours, theirs);
    assert!(ours.contains(&(8 << 20).to_string()), "{ours}");
}

#[test]
fn https_with_a_test_ca() {
    let dir = TempDir::new("curltls");
    let (root, data) = image(&dir, 1 << 20);
    let pki = TestPki::make(&dir);
    let nginx = Nginx::start(&dir, &root, Some(&pki));
    let url = nginx.url("disk.img");
    let ca = format!("cainfo={}", pki.ca.display());
    assert_eq!(copy(&dir, false, &["curl", &url, &ca], "ca.img"), data);
    assert_eq!(
        copy(&dir, false, &["curl", &url, "sslverify=false"], "noverify.img"),
        data
    );
    // Without the CA the system's trust store does not know the server: refused at startup.
    let o = run_captive(&["curl", &url], "echo RAN");
    assert_exit1(&o);
    assert!(!stdout(&o).contains("RAN"), "{}", describe(&o));
    assert!(
        stderr(&o).contains("127.0.0.1"),
        "the error names the server\n{}",
        describe(&o)
    );
}

#[test]
fn redirects_stay_on_the_granted_origin() {
    let dir = TempDir::new("curlredir");
    let (root, data) = image(&dir, 1 << 20);
    let nginx = Nginx::start(&dir, &root, None);
    assert_eq!(
        copy(&dir, false, &["curl", &nginx.url("redirect/disk.img")], "r.img"),
        data
    );
    // The redirect is resolved once: reads go to the target, not through the 302 again.
    let redirects = nginx.log().lines().filter(|l| l.starts_with("GET /redirect/")).count();
    assert_eq!(redirects, 0, "{}", nginx.log());
    for (url, extra, why) in [
        (nginx.url("offsite/disk.img"), "followlocation=true", "127.0.0.2"),
        (nginx.url("redirect/disk.img"), "followlocation=false", "302"),
    ] {
        let o = run_captive(&["curl", &url, extra], "echo RAN");
        assert_exit1(&o);
        assert!(stderr(&o).contains(why), "{url} {extra}\n{}", describe(&o));
    }
}

#[test]
fn passwords_are_read_as_nbdkit_reads_them() {
    let dir = TempDir::new("curlpw");
    let (root, _) = image(&dir, 65536);
    let nginx = Nginx::start(&dir, &root, None);
    let url = nginx.url("disk.img");
    let file = dir.join("password");
    fs::write(&file, "from-a-file\n").unwrap();
    let from_file = format!("password=+{}", file.display());
    // The same secret from a file, and from descriptor 3 given by the shell.
    let from_fd = format!(
        "exec 3<{}; exec {} -U - curl {url} user=bob password=-3 --run 'nbdcopy \"$uri\" null:'",
        shell_quote(file.to_str().unwrap()),
        shell_quote(bin().to_str().unwrap())
    );
    assert_success(&run_captive(
        &["curl", &url, "user=bob", &from_file],
        "nbdcopy \"$uri\" null:",
    ));
    assert_success(&run_tool("sh", &["-c", &from_fd], None));
    // "bob:from-a-file" in base64, twice; the secret is never in a message.
    let basic = "\"Basic Ym9iOmZyb20tYS1maWxl\"";
    let gets = nginx
        .log()
        .lines()
        .filter(|l| l.starts_with("GET ") && l.contains(basic))
        .count();
    assert!(gets >= 2, "{}", nginx.log());
    let o = run_captive(&["curl", &url, "password=+/nonexistent/pw"], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("password: +/nonexistent/pw"), "{}", describe(&o));
}

#[test]
fn only_http_urls_can_be_granted() {
    for url in ["file:///etc/passwd", "ftp://127.0.0.1/disk.img", "/etc/passwd"] {
        let o = run_captive(&["curl", &format!("url={url}")], "echo RAN");
        assert_exit1(&o);
        assert!(stderr(&o).contains("url="), "{url}\n{}", describe(&o));
    }
}

#[test]
fn headers_reach_the_server_and_the_host_keeps_its_own() {
    let dir = TempDir::new("curlhdr");
    let (root, _) = image(&dir, 65536);
    let nginx = Nginx::start(&dir, &root, None);
    let url = nginx.url("disk.img");
    let args = [
        "curl",
        &url,
        "header=X-Test: from-the-command-line",
        "user-agent=nbdbox-test/1",
        "cookie=session=42",
        "user=alice",
        "password=secret",
    ];
    assert_success(&run_captive(&args, "nbdcopy \"$uri\" null:"));
    let log = nginx.log();
    let get = log
        .lines()
        .find(|l| l.starts_with("GET "))
        .unwrap_or_else(|| panic!("{log}"));
    for expected in [
        "\"nbdbox-test/1\"",
        "\"session=42\"",
        "\"Basic YWxpY2U6c2VjcmV0\"",
        "\"from-the-command-line\"",
    ] {
        assert!(get.contains(expected), "{expected} missing: {get}");
    }
    for header in ["Range: bytes=0-1", "Host: 127.0.0.2", "X-Evil: a\rb"] {
        let o = run_captive(&["curl", &url, &format!("header={header}")], "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"), "{header}\n{}", describe(&o));
    }
}

#[test]
fn a_server_that_ignores_range_gives_eio_not_wrong_bytes() {
    let dir = TempDir::new("curlrange");
    let (root, _) = image(&dir, 1 << 20);
    let origin = FlakyOrigin::start(&dir, &root.join("disk.img"), "ignore-range", 1, 0);
    let py = "try:\n    h.pread(4096, 65536)\n    print('read')\nexcept nbd.Error as e:\n    print(e.errno)\n";
    let o = run_captive(&["curl", &origin.url()], &nbdsh(&dir, "range", py));
    assert_eq!(assert_success(&o).trim(), "EIO", "{}", describe(&o));
    assert!(stderr(&o).contains("ignored the Range header"), "{}", describe(&o));
}

#[test]
fn an_object_replaced_mid_copy_gives_eio() {
    let dir = TempDir::new("curletag");
    let (root, _) = image(&dir, 1 << 20);
    let nginx = Nginx::start(&dir, &root, None);
    let replace = root.join("disk.img");
    let py = format!(
        "import os\nh.pread(4096, 0)\nopen({path:?}, 'wb').write(b'X' * 1048576)\n\
         os.utime({path:?}, (1, 1))\n\
         try:\n    h.pread(4096, 0)\n    print('read')\nexcept nbd.Error as e:\n    print(e.errno)\n",
        path = replace.to_str().unwrap()
    );
    let o = run_captive(&["curl", &nginx.url("disk.img")], &nbdsh(&dir, "etag", &py));
    assert_eq!(assert_success(&o).trim(), "EIO", "{}", describe(&o));
}

#[test]
fn retry_recovers_from_every_kind_of_fault() {
    // Each mode faults every 7th GET; a qemu-img convert through --filter=retry must come out
    // identical to the source anyway.
    let dir = TempDir::new("curlretry");
    let (root, data) = image(&dir, 16 << 20);
    let file = root.join("disk.img");
    for mode in ["503", "reset", "truncate", "ignore-range", "stall"] {
        let origin = FlakyOrigin::start(&dir, &file, mode, 7, 0);
        let out = dir.str(&format!("{mode}.raw"));
        let o = run_captive(
            &[
                "--filter=retry",
                "curl",
                &origin.url(),
                "retry-delay=1",
                "timeout=2",
                "connections=1",
            ],
            &format!("qemu-img convert -O raw \"$nbd\" {}", shell_quote(&out)),
        );
        assert_success(&o);
        let (gets, faulted) = origin.gets();
        assert!(faulted > 0, "{mode}: no fault was injected in {gets} GETs");
        assert!(
            fs::read(&out).unwrap() == data,
            "{mode}: the copy differs from the source"
        );
    }
}

#[test]
fn readahead_fetches_ahead_over_a_slow_origin() {
    // Sequential 64 KiB reads over an origin that delays every GET by 20 ms: with readahead the
    // host fetches 1 MiB chunks in the background, so the origin sees far fewer GETs.
    let dir = TempDir::new("curlra");
    let (root, data) = image(&dir, 8 << 20);
    let file = root.join("disk.img");
    let read = |readahead: bool| {
        let origin = FlakyOrigin::start(&dir, &file, "delay", 1, 20);
        let out = dir.str(&format!("ra-{readahead}.img"));
        let mut args = vec!["curl", "url"];
        let url = origin.url();
        args[1] = &url;
        if readahead {
            args.insert(0, "--filter=readahead");
        }
        let script = format!(
            "nbdcopy --request-size=65536 --connections=1 --requests=1 \"$uri\" {}",
            shell_quote(&out)
        );
        assert_success(&run_captive(&args, &script));
        assert!(
            fs::read(&out).unwrap() == data,
            "readahead={readahead}: the copy differs"
        );
        origin.gets().0
    };
    let (plain, ahead) = (read(false), read(true));
    assert_eq!(plain, 128, "one GET per 64 KiB read without readahead");
    // Eight 1 MiB chunks, plus the reads that go straight to the origin before the first
    // prefetch is under way: it runs on a host thread, in a lane of its own that opens first
    // (longer on a loaded machine).
    assert!(ahead <= 32, "readahead should fetch in 1 MiB chunks: {ahead} GETs");
}

#[test]
fn debug_flags_reach_the_plugin_and_unread_ones_are_warned_about() {
    let dir = TempDir::new("curldebug");
    let (root, _) = image(&dir, 65536);
    let nginx = Nginx::start(&dir, &root, None);
    let url = nginx.url("disk.img");
    let o = run_captive(
        &["-v", "-D", "curl.verbose=1", "-D", "curl.nosuch=1", "curl", &url],
        "nbdcopy \"$uri\" null:",
    );
    let log = stderr(&o);
    assert_success(&o);
    assert!(log.contains("curl: GET /disk.img bytes=0-65535"), "{log}");
    assert!(
        log.contains("-D curl.nosuch: curl did not read debug flag 'nosuch'"),
        "{log}"
    );
    assert!(!log.contains("curl.verbose: curl did not read"), "{log}");
}

#[test]
fn a_gibibyte_comes_through_retry_from_an_origin_that_fails_every_seventh_request() {
    let dir = TempDir::new("curlgib");
    let (root, data) = image(&dir, 1 << 30);
    let origin = FlakyOrigin::start(&dir, &root.join("disk.img"), "reset", 7, 0);
    let out = dir.str("out.raw");
    let o = run_captive_timeout(
        &["--filter=retry", "curl", &origin.url(), "retry-delay=1", "timeout=10"],
        &format!("qemu-img convert -O raw \"$nbd\" {}", shell_quote(&out)),
        std::time::Duration::from_secs(600),
    );
    assert_success(&o);
    let (gets, faulted) = origin.gets();
    assert!(faulted > 10, "{faulted} faults in {gets} GETs");
    assert!(fs::read(&out).unwrap() == data, "the copy differs from the source");
}
