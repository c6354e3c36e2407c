//! TLS (nbdkit-tls(1)): X.509 and PSK with real clients (nbdcopy, nbdinfo, qemu-img), the
//! clients a server must refuse, `--tls=require` against plaintext clients, and the state
//! STARTTLS must forget. Where nbdkit 1.32.5 has the feature, the same clients must succeed
//! and fail against both servers.

use crate::support::nbd::*;
use crate::support::*;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// libnbd's URI for the socket, with X.509 client credentials from `dir`.
fn x509_uri(dir: &Path) -> String {
    format!("nbds+unix:///?socket=$unixsocket&tls-certificates={}", dir.display())
}

/// qemu's options for the socket with X.509 credentials from `dir`.
fn qemu_x509(dir: &Path) -> String {
    format!(
        "--object tls-creds-x509,id=tls0,dir={},endpoint=client \
         --image-opts driver=nbd,path=$unixsocket,tls-creds=tls0,tls-hostname=localhost",
        dir.display()
    )
}

fn qemu_psk(dir: &Path, user: &str) -> String {
    format!(
        "--object tls-creds-psk,id=tls0,dir={},username={user},endpoint=client \
         --image-opts driver=nbd,path=$unixsocket,tls-creds=tls0",
        dir.display()
    )
}

/// Run `attempts` (name, shell command) against a server started with `args`, by nbdbox or by
/// nbdkit, and say which succeeded: `name=ok` or `name=failed`, one per line.
fn outcomes(nbdkit: bool, args: &[&str], attempts: &[(&str, String)]) -> String {
    let script: String = attempts
        .iter()
        .map(|(name, command)| {
            format!("if {command} >/dev/null 2>&1; then echo {name}=ok; else echo {name}=failed; fi\n")
        })
        .collect();
    let o = if nbdkit {
        nbdkit_captive(args, &script)
    } else {
        run_captive(args, &script)
    };
    assert_success(&o)
}

#[test]
fn x509_copies_both_ways_with_libnbd_and_qemu() {
    let dir = TempDir::new("tlsx509");
    let pki = Pki::make(&dir);
    let (source, data) = disk(&dir, "source.img", 11, 64 << 20);
    let target = dir.str("target.img");
    fs::write(&target, vec![0u8; 64 << 20]).unwrap();
    let out = dir.str("out.img");
    let good = pki.client("good");
    let script = format!(
        "nbdcopy {source} \"{}\" && qemu-img convert -O raw {} {out}",
        x509_uri(&good),
        qemu_x509(&good)
    );
    let certs = format!("--tls-certificates={}", pki.server.display());
    let o = run_captive(
        &["--tls=require", &certs, "--tls-verify-peer", "file", &target],
        &script,
    );
    assert_success(&o);
    assert!(
        fs::read(&target).unwrap() == data,
        "what nbdcopy wrote over TLS differs"
    );
    assert!(fs::read(&out).unwrap() == data, "what qemu-img read over TLS differs");
}

#[test]
fn psk_copies_both_ways_with_libnbd_and_qemu() {
    let dir = TempDir::new("tlspsk");
    let pki = Pki::make(&dir);
    let (source, data) = disk(&dir, "source.img", 12, 64 << 20);
    let target = dir.str("target.img");
    fs::write(&target, vec![0u8; 64 << 20]).unwrap();
    let out = dir.str("out.img");
    let alice = pki.psk_client("alice", "alice", true);
    let script = format!(
        "nbdcopy {source} \"nbds+unix://alice@/?socket=$unixsocket&tls-psk-file={}\" && \
         qemu-img convert -O raw {} {out}",
        pki.psk.display(),
        qemu_psk(&alice, "alice")
    );
    let psk = format!("--tls-psk={}", pki.psk.display());
    assert_success(&run_captive(&["--tls=require", &psk, "file", &target], &script));
    assert!(
        fs::read(&target).unwrap() == data,
        "what nbdcopy wrote over TLS differs"
    );
    assert!(fs::read(&out).unwrap() == data, "what qemu-img read over TLS differs");
}

#[test]
fn clients_without_valid_certificates_are_refused_as_nbdkit_refuses_them() {
    let dir = TempDir::new("tlsrefuse");
    let pki = Pki::make(&dir);
    let mut attempts: Vec<(&str, String)> = ["no-cert", "other-ca", "expired", "revoked"]
        .iter()
        .map(|&name| (name, format!("nbdinfo --size \"{}\"", x509_uri(&pki.client(name)))))
        .collect();
    attempts.push((
        "qemu-no-cert",
        format!("qemu-img info {}", qemu_x509(&pki.client("no-cert"))),
    ));
    attempts.push((
        "qemu-revoked",
        format!("qemu-img info {}", qemu_x509(&pki.client("revoked"))),
    ));
    // A client that does not trust the server's CA (libnbd 1.14 does not check: qemu does).
    let other = qemu_x509(&pki.client("trusts-other-ca"));
    attempts.push(("qemu-trusts-other-ca", format!("qemu-img info {other}")));
    attempts.push(("plaintext", "nbdinfo --size \"nbd+unix:///?socket=$unixsocket\"".into()));
    // After all of them, the good client is still served.
    attempts.push(("good", format!("nbdinfo --size \"{}\"", x509_uri(&pki.client("good")))));
    attempts.push(("qemu-good", format!("qemu-img info {}", qemu_x509(&pki.client("good")))));
    let certs = format!("--tls-certificates={}", pki.server.display());
    let args = ["--tls=require", &certs, "--tls-verify-peer", "memory", "1M"];
    let ours = outcomes(false, &args, &attempts);
    let expected: String = attempts
        .iter()
        .map(|(name, _)| format!("{name}={}\n", if name.contains("good") { "ok" } else { "failed" }))
        .collect();
    assert_eq!(ours, expected);
    assert_eq!(ours, outcomes(true, &args, &attempts), "nbdkit decides otherwise");
}

#[test]
fn unknown_psk_users_and_wrong_keys_are_refused_as_nbdkit_refuses_them() {
    let dir = TempDir::new("tlspskrefuse");
    let pki = Pki::make(&dir);
    let psk_uri = |user: &str, dir: &Path| {
        format!(
            "nbdinfo --size \"nbds+unix://{user}@/?socket=$unixsocket&tls-psk-file={}/keys.psk\"",
            dir.display()
        )
    };
    let mallory = pki.psk_client("mallory", "mallory", false);
    let wrong = pki.psk_client("wrong-key", "alice", false);
    let alice = pki.psk_client("alice", "alice", true);
    let attempts = [
        ("unknown-user", psk_uri("mallory", &mallory)),
        ("wrong-key", psk_uri("alice", &wrong)),
        ("qemu-wrong-key", format!("qemu-img info {}", qemu_psk(&wrong, "alice"))),
        ("alice", psk_uri("alice", &alice)),
        ("qemu-alice", format!("qemu-img info {}", qemu_psk(&alice, "alice"))),
    ];
    let psk = format!("--tls-psk={}", pki.psk.display());
    let args = ["--tls=require", &psk, "memory", "1M"];
    let ours = outcomes(false, &args, &attempts);
    assert_eq!(
        ours,
        "unknown-user=failed\nwrong-key=failed\nqemu-wrong-key=failed\nalice=ok\nqemu-alice=ok\n"
    );
    assert_eq!(ours, outcomes(true, &args, &attempts), "nbdkit decides otherwise");
}

/// Greeting and client flags on a fresh connection, in the clear.
fn connect_plain(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut greeting = [0; 18];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes())
        .unwrap();
    s
}

fn send_option(s: &mut impl Write, option: u32, payload: &[u8]) {
    let mut b = Vec::new();
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    s.write_all(&b).unwrap();
}

/// Option replies up to the final one: (type, data) each.
fn replies(s: &mut impl Read) -> Vec<(u32, Vec<u8>)> {
    let mut all = Vec::new();
    loop {
        let mut h = [0; 20];
        s.read_exact(&mut h).unwrap();
        let typ = be32_of(&h[12..]);
        let mut data = vec![0; be32_of(&h[16..]) as usize];
        s.read_exact(&mut data).unwrap();
        all.push((typ, data));
        if typ != REP_SERVER && typ != REP_INFO && typ != REP_META_CONTEXT {
            return all;
        }
    }
}

/// STARTTLS on `s`, then the TLS handshake as the good client.
fn start_tls(mut s: UnixStream, pki: &Pki) -> SslStream<UnixStream> {
    send_option(&mut s, OPT_STARTTLS, &[]);
    assert_eq!(replies(&mut s).last().unwrap().0, REP_ACK);
    let client = pki.client("good");
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.set_ca_file(client.join("ca-cert.pem")).unwrap();
    connector
        .set_certificate_file(client.join("client-cert.pem"), SslFiletype::PEM)
        .unwrap();
    connector
        .set_private_key_file(client.join("client-key.pem"), SslFiletype::PEM)
        .unwrap();
    connector.set_verify(SslVerifyMode::PEER);
    connector.build().connect("localhost", s).expect("TLS handshake")
}

#[test]
fn require_answers_nothing_before_tls_and_the_stream_stays_in_step() {
    let dir = TempDir::new("tlsreq");
    let pki = Pki::make(&dir);
    let certs = format!("--tls-certificates={}", pki.server.display());
    let srv = Server::start(&[
        "-v",
        "--tls=require",
        &certs,
        &filter_arg("recorder"),
        "memory",
        "1M",
        "recorder=r",
    ]);
    let mut s = connect_plain(&srv.sock);
    // Options with and without payloads: each refused, each payload skipped.
    for (option, payload) in [
        (OPT_INFO, info_payload("", &[INFO_DESCRIPTION])),
        (OPT_LIST, Vec::new()),
        (OPT_STRUCTURED_REPLY, Vec::new()),
        (OPT_GO, info_payload("", &[])),
    ] {
        send_option(&mut s, option, &payload);
        assert_eq!(
            replies(&mut s),
            [(REP_ERR_TLS_REQD, b"TLS is required before this option".to_vec())]
        );
    }
    // Configuration aside, no layer saw this client.
    let reached = |log: &str| {
        recorded(log)
            .into_iter()
            .filter(|c| !c.ends_with("config-complete") && !c.ends_with("get-ready") && !c.contains("config "))
            .collect::<Vec<_>>()
    };
    assert!(
        reached(&srv.stderr()).is_empty(),
        "a layer was reached before TLS:\n{}",
        srv.stderr()
    );
    // The same connection can still upgrade, and is then served.
    let mut tls = start_tls(s, &pki);
    send_option(&mut tls, OPT_GO, &info_payload("", &[]));
    assert_eq!(replies(&mut tls).last().unwrap().0, REP_ACK);
    let calls = recorded(&srv.stderr());
    assert!(calls.iter().any(|c| c.contains("open")), "{calls:?}");
    // libnbd in the clear fails.
    let o = run_tool("nbdinfo", &["--size", &srv.uri()], None);
    assert!(!o.status.success());
}

#[test]
fn starttls_forgets_what_was_negotiated_in_the_clear() {
    let dir = TempDir::new("tlsreset");
    let pki = Pki::make(&dir);
    let certs = format!("--tls-certificates={}", pki.server.display());
    let srv = Server::start(&["--tls=on", &certs, "memory", "1M"]);
    let mut s = connect_plain(&srv.sock);
    send_option(&mut s, OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(replies(&mut s).last().unwrap().0, REP_ACK);
    let mut tls = start_tls(s, &pki);
    // SET_META_CONTEXT needs structured replies: forgotten, so refused.
    send_option(&mut tls, OPT_SET_META_CONTEXT, &meta_payload("", &["base:allocation"]));
    assert_eq!(replies(&mut tls).last().unwrap().0, REP_ERR_INVALID);
    send_option(&mut tls, OPT_GO, &info_payload("", &[]));
    assert_eq!(replies(&mut tls).last().unwrap().0, REP_ACK);
    // A READ is answered with a simple reply, not a structured one.
    let mut request = Vec::new();
    request.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    request.extend_from_slice(&0u16.to_be_bytes());
    request.extend_from_slice(&CMD_READ.to_be_bytes());
    request.extend_from_slice(&7u64.to_be_bytes());
    request.extend_from_slice(&0u64.to_be_bytes());
    request.extend_from_slice(&512u32.to_be_bytes());
    tls.write_all(&request).unwrap();
    let mut reply = [0; 16 + 512];
    tls.read_exact(&mut reply).unwrap();
    assert_eq!(be32_of(&reply), SIMPLE_REPLY_MAGIC, "a simple reply");
    assert_eq!(be32_of(&reply[4..]), 0, "no error");
    assert_eq!(be64_of(&reply[8..]), 7, "the cookie");
}

#[test]
fn tls_on_lets_the_client_choose_and_off_refuses_starttls() {
    let dir = TempDir::new("tlson");
    let pki = Pki::make(&dir);
    let certs = format!("--tls-certificates={}", pki.server.display());
    let attempts = [
        ("plain", "nbdinfo --size \"nbd+unix:///?socket=$unixsocket\"".to_owned()),
        ("tls", format!("nbdinfo --size \"{}\"", x509_uri(&pki.client("good")))),
    ];
    assert_eq!(
        outcomes(false, &["--tls=on", &certs, "memory", "1M"], &attempts),
        "plain=ok\ntls=ok\n"
    );
    assert_eq!(
        outcomes(false, &["--tls=off", &certs, "memory", "1M"], &attempts),
        "plain=ok\ntls=failed\n"
    );
    // Without credentials, require cannot start; on warns and serves in the clear.
    let missing = format!("--tls-certificates={}", dir.join("nowhere").display());
    let o = run_captive(&["--tls=require", &missing, "memory", "1M"], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("--tls-certificates"), "{}", describe(&o));
    let o = run_captive(
        &["--tls=require", "--tls-psk=/nonexistent/keys.psk", "memory", "1M"],
        "echo RAN",
    );
    assert_exit1(&o);
    assert!(
        stderr(&o).contains("--tls-psk=/nonexistent/keys.psk"),
        "{}",
        describe(&o)
    );
}

#[test]
fn sslkeylogfile_records_the_session_secrets() {
    let dir = TempDir::new("tlskeylog");
    let pki = Pki::make(&dir);
    let keylog = dir.join("keys.log");
    let certs = format!("--tls-certificates={}", pki.server.display());
    let script = format!("nbdinfo --size \"{}\"", x509_uri(&pki.client("good")));
    let mut c = Command::new(bin());
    c.args(["-U", "-", "--tls=require", &certs, "memory", "1M", "--run", &script])
        .env("SSLKEYLOGFILE", &keylog);
    let o = run_with_timeout(c, Duration::from_secs(60));
    assert_success(&o);
    let log = fs::read_to_string(&keylog).unwrap();
    assert!(log.contains("CLIENT_TRAFFIC_SECRET_0 "), "{log}");
}

#[test]
fn user_and_group_are_dropped_once_listening() {
    let port = free_port().to_string();
    let script = "nbdinfo --size \"nbd://127.0.0.1:$port\" && grep -E '^(Uid|Gid|Groups):' /proc/$PPID/status";
    let o = run_captive_tcp(&["-p", &port, "-u", "nobody", "-g", "nogroup", "memory", "1M"], script);
    let me_root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap();
    if !me_root {
        // Only root may become someone else: the option is named in the error.
        assert_exit1(&o);
        assert!(stderr(&o).contains("-g: setgroups"), "{}", describe(&o));
        return;
    }
    let out = assert_success(&o);
    let nobody = run_tool("id", &["-u", "nobody"], None);
    let uid = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
    assert!(out.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("Groups:") && !l.contains(" 0")),
        "{out}"
    );
    assert!(out.starts_with("1048576"), "{out}");
}

/// `nbdbox ARGS --run SCRIPT` on the TCP port the arguments name.
fn run_captive_tcp(args: &[&str], script: &str) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(args).args(["--run", script]);
    run_with_timeout(c, Duration::from_secs(60))
}

#[test]
fn uri_carries_what_a_client_needs_under_require() {
    let dir = TempDir::new("tlsuri");
    let pki = Pki::make(&dir);
    let psk = format!("--tls-psk={}", pki.psk.display());
    let o = run_captive(
        &["--tls=require", &psk, "memory", "1G"],
        "echo \"$uri\" && nbdinfo --size \"$uri\"",
    );
    let out = assert_success(&o);
    assert!(out.starts_with("nbds+unix://alice@?socket="), "{out}");
    assert!(out.contains(&format!("tls-psk-file={}", pki.psk.display())), "{out}");
    assert!(out.ends_with("1073741824\n"), "{out}");
    let certs = format!("--tls-certificates={}", pki.server.display());
    let o = run_captive(&["--tls=require", &certs, "memory", "1G"], "nbdinfo --size \"$uri\"");
    assert_eq!(assert_success(&o), "1073741824\n");
    // --tls=on: the client may stay in the clear, and $uri lets it.
    let o = run_captive(&["--tls=on", &certs, "memory", "1G"], "echo \"$uri\"");
    assert!(assert_success(&o).starts_with("nbd+unix://?socket="));
}

/// OpenSSL is loaded when TLS is configured, not at every start (host/src/libssl.rs): the
/// binary does not need libssl, a server without TLS never maps it, and one with a PSK maps
/// it and serves a TLS client.
#[cfg(target_arch = "x86_64")]
#[test]
fn openssl_is_loaded_only_for_tls() {
    let dynamic = Command::new(tool("readelf"))
        .arg("--dynamic")
        .arg(bin())
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    if dynamic.contains("[libssl.so") || dynamic.contains("[libcrypto.so") {
        let symbols = Command::new(tool("nm"))
            .args(["-D", "--undefined-only"])
            .arg(bin())
            .output()
            .unwrap();
        let direct: Vec<_> = String::from_utf8_lossy(&symbols.stdout)
            .lines()
            .filter(|line| line.contains("@OPENSSL"))
            .map(str::to_owned)
            .collect();
        panic!(
            "the binary links OpenSSL at startup: add these to host/src/libssl.rs:\n{}",
            direct.join("\n")
        );
    }
    let maps = |pid: u32| fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let plain = Server::start(&["memory", "1M"]);
    assert!(
        !maps(plain.pid).contains("/libssl.so"),
        "a server without TLS mapped libssl"
    );

    let dir = TempDir::new("tlslazy");
    let pki = Pki::make(&dir);
    let psk = format!("--tls-psk={}", pki.psk.display());
    let tls = Server::start(&["--tls=require", &psk, "memory", "1M"]);
    let mapped = maps(tls.pid);
    assert!(
        mapped.contains("/libssl.so") && mapped.contains("/libcrypto.so"),
        "a server with --tls-psk has not loaded OpenSSL:\n{mapped}"
    );
    let uri = format!(
        "nbds+unix://alice@/?socket={}&tls-psk-file={}",
        tls.sock.display(),
        pki.psk.display()
    );
    let out = Command::new(tool("nbdinfo")).args(["--size", &uri]).output().unwrap();
    assert!(
        out.status.success(),
        "nbdinfo over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1048576");
}

/// Without libssl a server still serves plain NBD, and `--tls` fails naming the library
/// (host/src/libssl.rs): libssl.so.3 is hidden behind /dev/null in a private mount namespace.
#[cfg(target_arch = "x86_64")]
#[test]
fn without_libssl_plain_serves_and_tls_names_it() {
    // The test binary links OpenSSL itself, so its maps give the library's path.
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let libssl = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libssl.so.3"))
        .expect("the test binary maps libssl.so.3");
    let dir = TempDir::new("tlsnolib");
    let pki = Pki::make(&dir);
    let hidden = |args: &[&str]| {
        let mut c = Command::new(tool("unshare"));
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("mount --bind /dev/null {libssl} && exec \"$@\""))
            .arg("sh")
            .arg(bin())
            .args(args);
        run_with_timeout(c, DEFAULT_TIMEOUT)
    };

    let plain = hidden(&["-U", "-", "memory", "1M", "--run", "nbdinfo --size $uri"]);
    assert_eq!(assert_success(&plain).trim(), "1048576");

    let psk = format!("--tls-psk={}", pki.psk.display());
    let tls = hidden(&["--tls=require", &psk, "-U", "-", "memory", "1M", "--run", "true"]);
    assert_exit1(&tls);
    let stderr = stderr(&tls);
    assert!(
        stderr.contains("--tls-psk=") && stderr.contains("cannot load libssl.so.3"),
        "the error names the option and the library: {stderr}"
    );
}
