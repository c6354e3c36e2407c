//! The built-in `tls-fallback` filter (nbdkit-tls-fallback-filter(1)): under `--tls=on` a
//! plaintext client gets a 512-byte read-only export holding the message, compared byte for
//! byte with Debian's nbdkit 1.32.5 (nbdcopy of the export, nbdinfo's description and list);
//! TLS clients (X.509 and PSK, libnbd and qemu) get the plugin; a plaintext client never
//! reaches it.

use crate::support::*;

/// What plaintext clients see: nbdinfo's description and export list (minus the lines
/// naming the socket), the export's bytes as nbdcopy and qemu-img read them, and what
/// another export name gets.
fn plaintext_view(dir: &TempDir) -> String {
    let copy = dir.str("qemu.raw");
    format!(
        "nbdinfo \"$uri\" | grep -v 'uri:' && \
         nbdinfo --list --json \"$uri\" | grep -v '\"uri\"' && \
         nbdcopy \"$uri\" - | od -An -c && \
         qemu-img convert -O raw \"$uri\" {copy} && od -An -c {copy} && \
         nbdinfo --size \"nbd+unix:///other?socket=$unixsocket\""
    )
}

fn server_args<'a>(certs: &'a str, readme: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["--tls=on", certs, "--filter=tls-fallback", "memory", "1M"];
    args.extend(readme);
    args
}

#[test]
fn plaintext_clients_get_the_message_as_from_nbdkit() {
    let dir = TempDir::new("tlsfb");
    let pki = Pki::make(&dir);
    let certs = format!("--tls-certificates={}", pki.server.display());
    let long = format!("tlsreadme={}", "0123456789".repeat(60));
    let exact = format!("tlsreadme={}", "x".repeat(512));
    for readme in [
        None,
        Some("tlsreadme=Ask the administrator for a certificate.\n"),
        Some(long.as_str()),
        Some(exact.as_str()),
    ] {
        let out = same_as_nbdkit(&server_args(&certs, readme), &plaintext_view(&dir));
        assert!(out.contains("export-size: 512\n"), "{out}");
        assert!(out.contains("is_read_only: true"), "{out}");
        assert!(
            out.ends_with("\n512\n"),
            "another export name gets the message too:\n{out}"
        );
    }
    let out = same_as_nbdkit(&server_args(&certs, None), "nbdcopy \"$uri\" -");
    let mut expected = b"This NBD server requires TLS authentication before it will serve useful data.\n".to_vec();
    expected.resize(512, 0);
    assert_eq!(out.as_bytes(), expected, "the default message, NUL-padded");
}

/// libnbd's URI for the socket, with X.509 client credentials from `dir`.
fn x509_uri(dir: &std::path::Path) -> String {
    format!("nbds+unix:///?socket=$unixsocket&tls-certificates={}", dir.display())
}

#[test]
fn tls_clients_get_the_plugin() {
    let dir = TempDir::new("tlsfbtls");
    let pki = Pki::make(&dir);
    let good = pki.client("good");
    let (img, data) = disk(&dir, "d.img", 73, 1 << 20);
    let x509 = x509_uri(&good);
    let qemu = format!(
        "qemu-img convert -O raw --object tls-creds-x509,id=tls0,dir={},endpoint=client \
         --image-opts driver=nbd,path=$unixsocket,tls-creds=tls0,tls-hostname=localhost",
        good.display()
    );
    let script = format!(
        "nbdinfo \"{x509}\" | grep -v 'uri:' && nbdinfo --list \"{x509}\" | grep -v 'uri:' && \
         nbdcopy \"{x509}\" {out1} && {qemu} {out2}",
        out1 = dir.str("out1"),
        out2 = dir.str("out2"),
    );
    let certs = format!("--tls-certificates={}", pki.server.display());
    let args = ["--tls=on", &certs, "--filter=tls-fallback", "file", &img];
    let (ours, theirs) = both(&args, &script);
    assert_eq!(ours, theirs, "nbdinfo over TLS differs from nbdkit's");
    assert!(ours.contains("export-size: 1048576"), "{ours}");
    for out in ["out1", "out2"] {
        assert!(
            std::fs::read(dir.join(out)).unwrap() == data,
            "{out} differs from the disk"
        );
    }

    // PSK clients too, and they may write.
    let psk = format!("--tls-psk={}", pki.psk.display());
    let uri = format!(
        "nbds+unix://alice@/?socket=$unixsocket&tls-psk-file={}",
        pki.psk.display()
    );
    let write = format!(
        "nbdcopy {img} \"{uri}\" && nbdcopy \"{uri}\" - | cmp - {img} && echo same && \
         nbdinfo --can write \"nbd+unix:///?socket=$unixsocket\" || echo plaintext read-only"
    );
    let out = same_as_nbdkit(&["--tls=on", &psk, "--filter=tls-fallback", "memory", "1M"], &write);
    assert_eq!(out, "same\nplaintext read-only\n");
}

#[test]
fn plaintext_clients_never_reach_the_layers_below() {
    let dir = TempDir::new("tlsfbrec");
    let pki = Pki::make(&dir);
    let certs = format!("--tls-certificates={}", pki.server.display());
    let recorder = filter_arg("recorder");
    let args = [
        "-v",
        "--tls=on",
        &certs,
        "--filter=tls-fallback",
        &recorder,
        "memory",
        "1M",
        "recorder=below",
    ];
    let tls = x509_uri(&pki.client("good"));
    let o = run_captive(
        &args,
        &format!("nbdcopy \"$uri\" - >/dev/null && nbdinfo --size \"{tls}\""),
    );
    assert_eq!(assert_success(&o), "1048576\n");
    let opened = recorded(&stderr(&o))
        .into_iter()
        .filter(|call| call == "below: open")
        .count();
    assert_eq!(opened, 1, "only the TLS client opens the plugin\n{}", stderr(&o));
}

#[test]
fn a_stack_that_serializes_connections_is_refused_as_nbdkit_refuses_it() {
    let dir = TempDir::new("tlsfbser");
    let pki = Pki::make(&dir);
    let certs = format!("--tls-certificates={}", pki.server.display());
    let args = [
        "--tls=on",
        &certs,
        "--filter=tls-fallback",
        "--filter=noparallel",
        "memory",
        "1M",
        "serialize=connections",
    ];
    for o in [run_captive(&args, "true"), nbdkit_captive(&args, "true")] {
        assert_exit1(&o);
        assert!(
            stderr(&o).contains("the tls-fallback filter requires parallel connection support"),
            "{}",
            stderr(&o)
        );
    }
    // serialize=requests is fine.
    let mut args = args.to_vec();
    args[6] = "serialize=requests";
    assert_eq!(same_as_nbdkit(&args, "nbdinfo --size \"$uri\""), "512\n");
}
