//! The built-in `ip` filter (nbdkit-ip-filter(1)): real clients over TCP on 127.0.0.1 and
//! ::1 and over Unix sockets, let in or refused by `allow=`/`deny=` rules, and TLS clients by
//! the certificates support/pki.rs makes.
//!
//! Debian's nbdkit 1.32.5 is the reference for the keyword rules only: its ip filter was
//! built without inet_pton (ip.c tests `#ifdef INET_PTON`, which nothing defines), so it
//! refuses every address and network rule ("don't know how to parse rule: allow=127.0.0.1"),
//! and it predates `dn:`/`issuer-dn:` (1.40). Those are checked against nbdkit-ip-filter(1).

use crate::support::*;
use std::process::Command;

/// How a client reaches the server.
#[derive(Clone, Copy, Debug)]
enum Via {
    Ipv4,
    Ipv6,
    Unix,
}

const VIAS: [Via; 3] = [Via::Ipv4, Via::Ipv6, Via::Unix];

/// Whether nbdinfo, connecting `via`, is let in by a server (nbdbox, or nbdkit as the
/// reference) serving `memory 1M` through the ip filter with `rules`.
fn admitted(nbdkit: bool, via: Via, rules: &[&str]) -> bool {
    let port = free_port();
    let (listen, uri) = match via {
        Via::Ipv4 => (format!("-i 127.0.0.1 -p {port}"), format!("nbd://127.0.0.1:{port}")),
        Via::Ipv6 => (format!("-i ::1 -p {port}"), format!("nbd://[::1]:{port}")),
        Via::Unix => ("-U -".to_owned(), "$uri".to_owned()),
    };
    let mut c = Command::new(if nbdkit { tool("nbdkit") } else { bin() });
    c.args(listen.split(' '))
        .args(["--filter=ip", "memory", "1M"])
        .args(rules)
        .args([
            "--run",
            &format!("if nbdinfo --size \"{uri}\"; then echo admitted; else echo refused; fi"),
        ]);
    let out = assert_success(&run_with_timeout(c, DEFAULT_TIMEOUT));
    match out.lines().last() {
        Some("admitted") => true,
        Some("refused") => false,
        _ => panic!("unexpected client output:\n{out}"),
    }
}

/// `v4 v6 unix` as `+` (let in) or `-` (refused), for `rules` under nbdbox or nbdkit.
fn outcomes(nbdkit: bool, rules: &[&str]) -> String {
    VIAS.iter()
        .map(|&via| if admitted(nbdkit, via, rules) { "+" } else { "-" })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn keyword_rules_decide_as_nbdkit_decides_over_tcp_and_unix_sockets() {
    // (rules, expected outcomes for IPv4, IPv6, Unix)
    let cases: &[(&[&str], &str)] = &[
        (&[], "+ + +"),
        (&["deny=all"], "- - -"),
        (&["allow=anyipv4", "deny=all"], "+ - -"),
        (&["allow=allipv6", "deny=any"], "- + -"),
        (&["allow=anyunix", "deny=all"], "- - +"),
        (&["deny=anyipv4,allunix"], "- + -"),
        // Repeated keys add to their list; the allow list is read first, whatever the order.
        (&["deny=all", "allow=ANYIPV4", "allow=AnyIpv6"], "+ + -"),
        (&["allow=all", "deny=all"], "+ + +"),
        // nbdbox serves no AF_VSOCK clients: vsock rules match nobody.
        (&["allow=anyvsock", "deny=all"], "- - -"),
    ];
    for (rules, expected) in cases {
        let ours = outcomes(false, rules);
        assert_eq!(ours, *expected, "nbdbox with {rules:?}");
        assert_eq!(ours, outcomes(true, rules), "nbdkit decides otherwise for {rules:?}");
    }
}

#[test]
fn address_and_network_rules_decide_as_documented() {
    let cases: &[(&[&str], &str)] = &[
        (&["allow=127.0.0.1", "deny=all"], "+ - -"),
        (&["allow=::1", "deny=all"], "- + -"),
        (&["allow=127.0.0.0/8,::1/128", "deny=all"], "+ + -"),
        (&["allow=0:0:0:0:0:0:0:1", "deny=all"], "- + -"),
        (&["deny=127.0.0.2"], "+ + +"),
        (&["deny=127.0.0.0/31"], "- + +"),
        (&["deny=127.0.0.0/0x8"], "- + +"),
        (&["deny=0.0.0.0/0"], "- + +"),
        (&["deny=::/0"], "+ - +"),
        (&["deny=::2/127"], "+ + +"),
        (&["allow=10.0.0.0/8,fe80::/10", "deny=all"], "- - -"),
        // A v4-mapped IPv6 rule is an IPv6 rule: it never matches an IPv4 client.
        (&["deny=::ffff:127.0.0.1"], "+ + +"),
        (&["allow=192.168.0.0/16", "deny=anyipv4"], "- + +"),
    ];
    for (rules, expected) in cases {
        assert_eq!(outcomes(false, rules), *expected, "nbdbox with {rules:?}");
    }
}

/// nbdkit's message (after `nbdkit: error: `) for a command line it refuses.
fn nbdkit_refusal(args: &[&str]) -> String {
    let o = nbdkit_captive(args, "true");
    assert_exit1(&o);
    let err = stderr(&o);
    err.lines()
        .find_map(|l| l.strip_prefix("nbdkit: error: "))
        .unwrap_or_else(|| panic!("no error from nbdkit:\n{err}"))
        .to_owned()
}

#[test]
fn malformed_rules_are_refused_as_nbdkit_refuses_them() {
    for rule in [
        "allow=,all",
        "deny=all,,any",
        "deny=bogus",
        "allow=127.0.0.1/",
        "deny=::1/-8",
    ] {
        let args = ["--filter=ip", "memory", "1M", rule];
        let o = run_captive(&args, "true");
        assert_exit1(&o);
        let theirs = nbdkit_refusal(&args);
        assert!(
            stderr(&o).contains(&theirs),
            "nbdkit says `{theirs}` for {rule}, nbdbox:\n{}",
            stderr(&o)
        );
    }
}

#[test]
fn unix_clients_are_admitted_by_uid_gid_and_pid() {
    let me = |flag: &str| {
        String::from_utf8(run_tool("id", &[flag], None).stdout)
            .unwrap()
            .trim()
            .to_owned()
    };
    let (uid, gid) = (me("-u"), me("-g"));
    let outcome = |rules: &[String]| {
        let mut args = vec!["--filter=ip", "memory", "1M"];
        args.extend(rules.iter().map(String::as_str));
        let o = run_captive(&args, "nbdinfo --size \"$uri\" && echo served");
        stdout(&o).contains("served")
    };
    assert!(outcome(&[format!("allow=uid:{uid}"), "deny=all".into()]));
    assert!(outcome(&[format!("allow=GID:{gid}"), "deny=all".into()]));
    assert!(!outcome(&[format!("allow=uid:{}", 4_000_000), "deny=all".into()]));
    assert!(!outcome(&[format!("deny=uid:{uid}")]));
    // The client's pid is nbdinfo's: no fixed pid:1 matches it.
    assert!(!outcome(&["allow=pid:1".into(), "deny=all".into()]));
    // SELinux labels are not given to components: refused at startup, naming the rule.
    let o = run_captive(
        &[
            "--filter=ip",
            "memory",
            "1M",
            "deny=security:unconfined_u:unconfined_r:unconfined_t:s0",
        ],
        "true",
    );
    assert_exit1(&o);
    assert!(
        stderr(&o).contains("security: rules match the security label"),
        "{}",
        stderr(&o)
    );
}

/// nbdsh in option mode: connect, list the exports, then GO, saying how far it got.
const LIST_THEN_GO: &str = r#"
import os
h.set_opt_mode(True)
try:
    h.connect_uri(os.environ["uri"])
    print("connected")
except nbd.Error:
    print("refused at connect")
    raise SystemExit(0)
try:
    print("listed", h.opt_list(lambda name, description: 0))
except nbd.Error:
    print("list refused")
try:
    h.opt_go()
    print("size", h.get_size())
except nbd.Error:
    print("go refused")
"#;

fn list_then_go(dir: &TempDir) -> String {
    let py = dir.join("list_then_go.py");
    std::fs::write(&py, LIST_THEN_GO).unwrap();
    format!(
        "export uri; {} -c \"$(cat {})\"",
        tool("/usr/bin/nbdsh").display(),
        shell_quote(py.to_str().unwrap())
    )
}

#[test]
fn a_refused_client_gets_no_export_list() {
    let dir = TempDir::new("iplist");
    let script = list_then_go(&dir);
    let run = |rules: &[&str]| {
        let mut args = vec!["--filter=ip", "memory", "1M"];
        args.extend(rules);
        assert_success(&run_captive(&args, &script))
    };
    // Refused in preconnect: the connection ends before the greeting, as with nbdkit.
    let early = run(&["deny=all"]);
    assert_eq!(early, "refused at connect\n");
    assert_eq!(
        early,
        assert_success(&nbdkit_captive(&["--filter=ip", "memory", "1M", "deny=all"], &script))
    );
    // A rule on a certificate waits for the options (nbdkit ≥ 1.42): this client has none,
    // so it may connect, but neither list nor open an export.
    assert_eq!(
        run(&["allow=dn:CN=nobody", "deny=all"]),
        "connected\nlist refused\ngo refused\n"
    );
    assert_eq!(run(&["deny=dn:CN=nobody"]), "connected\nlisted 1\nsize 1048576\n");
}

/// The subject and issuer DNs of a certificate, as `certtool -i` prints them.
fn dns_of(certificate: &std::path::Path) -> (String, String) {
    let o = run_tool("certtool", &["-i", "--infile", certificate.to_str().unwrap()], None);
    let text = assert_success(&o);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in certtool's output:\n{text}"))
            .trim()
            .to_owned()
    };
    (field("Subject:"), field("Issuer:"))
}

/// libnbd's URI for the socket, with X.509 client credentials from `dir`.
fn x509_uri(dir: &std::path::Path) -> String {
    format!("nbds+unix:///?socket=$unixsocket&tls-certificates={}", dir.display())
}

/// `name=+` or `name=-` for each (name, command) run against a server started with `args`.
fn attempts(args: &[&str], attempts: &[(&str, String)]) -> String {
    let script: String = attempts
        .iter()
        .map(|(name, command)| format!("if {command} >/dev/null 2>&1; then echo {name}=+; else echo {name}=-; fi\n"))
        .collect();
    assert_success(&run_captive(args, &script))
}

#[test]
fn certificate_rules_let_in_exactly_the_named_certificate() {
    let dir = TempDir::new("ipdn");
    let pki = Pki::make(&dir);
    let good = pki.client("good");
    let (subject, issuer) = dns_of(&good.join("client-cert.pem"));
    assert_eq!(
        (subject.as_str(), issuer.as_str()),
        ("CN=good.example.com,O=nbdbox tests", "CN=ca")
    );
    let certs = format!("--tls-certificates={}", pki.server.display());
    let qemu = format!(
        "qemu-img info --object tls-creds-x509,id=tls0,dir={},endpoint=client \
         --image-opts driver=nbd,path=$unixsocket,tls-creds=tls0,tls-hostname=localhost",
        good.display()
    );
    let clients = [
        ("nbdinfo", format!("nbdinfo --size \"{}\"", x509_uri(&good))),
        ("qemu", qemu),
    ];
    let allow_subject = format!("allow=dn:{subject}");
    let cases: &[(&[&str], &str)] = &[
        (&[&allow_subject, "deny=all"], "+"),
        (&[&format!("allow=issuer-dn:{issuer}"), "deny=all"], "+"),
        // An address rule first; the DN after it takes the rest of the list, commas included.
        (&[&format!("allow=127.0.0.1,dn:{subject}"), "deny=all"], "+"),
        (&[&format!("deny=dn:{subject}")], "-"),
        (&["allow=dn:CN=good.example.com", "deny=all"], "-"),
        (&["allow=dn:cn=good.example.com,o=nbdbox tests", "deny=all"], "-"),
        (&["allow=issuer-dn:CN=other-ca", "deny=all"], "-"),
        (&["deny=issuer-dn:CN=ca"], "-"),
    ];
    for (rules, expected) in cases {
        let mut args = vec![
            "--tls=require",
            &certs,
            "--tls-verify-peer",
            "--filter=ip",
            "memory",
            "1M",
        ];
        args.extend(*rules);
        assert_eq!(
            attempts(&args, &clients),
            format!("nbdinfo={expected}\nqemu={expected}\n"),
            "{rules:?}"
        );
    }

    // A client with a pre-shared key has no certificate: it matches no DN rule.
    let psk = format!("--tls-psk={}", pki.psk.display());
    let alice = vec![(
        "alice",
        format!(
            "nbdinfo --size \"nbds+unix://alice@/?socket=$unixsocket&tls-psk-file={}\"",
            pki.psk.display()
        ),
    )];
    let cases: [(&[&str], &str); 2] = [(&[&allow_subject, "deny=all"], "-"), (&["deny=issuer-dn:CN=ca"], "+")];
    for (rules, expected) in cases {
        let mut args = vec!["--tls=require", &psk, "--filter=ip", "memory", "1M"];
        args.extend(rules);
        assert_eq!(attempts(&args, &alice), format!("alice={expected}\n"), "{rules:?}");
    }
}

#[test]
fn under_tls_on_the_certificate_decides_after_starttls_and_plaintext_reaches_no_plugin() {
    let dir = TempDir::new("ipdnon");
    let pki = Pki::make(&dir);
    let good = pki.client("good");
    let (subject, _) = dns_of(&good.join("client-cert.pem"));
    let certs = format!("--tls-certificates={}", pki.server.display());
    let rule = format!("allow=dn:{subject}");
    let recorder = filter_arg("recorder");
    let args = [
        "-v",
        "--tls=on",
        &certs,
        "--tls-verify-peer",
        "--filter=ip",
        &recorder,
        "memory",
        "1M",
        &rule,
        "deny=all",
        "recorder=below",
    ];
    let plain = "nbd+unix:///?socket=$unixsocket";
    let plaintext = [
        ("plain", format!("nbdinfo --size \"{plain}\"")),
        ("plain-list", format!("nbdinfo --list \"{plain}\"")),
        ("plain-qemu", format!("qemu-img info \"{plain}\"")),
    ];
    let o = run_captive(
        &args,
        &plaintext
            .iter()
            .map(|(_, c)| format!("{c} || echo refused\n"))
            .collect::<String>(),
    );
    assert_eq!(assert_success(&o), "refused\nrefused\nrefused\n");
    let opened: Vec<String> = recorded(&stderr(&o))
        .into_iter()
        .filter(|call| call == "below: open")
        .collect();
    assert!(opened.is_empty(), "a refused client reached the plugin: {opened:?}");

    let tls = [
        ("tls", format!("nbdinfo --size \"{}\"", x509_uri(&good))),
        ("tls-list", format!("nbdinfo --list \"{}\"", x509_uri(&good))),
    ];
    assert_eq!(attempts(&args, &tls), "tls=+\ntls-list=+\n");
}
