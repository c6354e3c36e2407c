//! Keys for the TLS tests, made the way nbdkit-tls(1) tells users to make them: certtool for
//! a CA, the server's certificate and clients' certificates (good, from another CA, expired,
//! revoked), psktool for pre-shared keys.

use super::process::run_with_timeout;
use super::temp::TempDir;
use super::tools::tool;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Pki {
    /// `--tls-certificates=` for the server: ca-cert.pem, server-cert.pem, server-key.pem,
    /// ca-crl.pem (revoking the `revoked` client).
    pub server: PathBuf,
    /// `--tls-psk=`: user alice.
    pub psk: PathBuf,
    root: PathBuf,
}

/// The client directories `Pki::client` names (libnbd's `tls-certificates=`, qemu's
/// `tls-creds-x509,dir=`: ca-cert.pem, client-cert.pem, client-key.pem).
pub const CLIENTS: [&str; 6] = ["good", "no-cert", "other-ca", "expired", "revoked", "trusts-other-ca"];

fn certtool(args: &[&str], out: &Path) {
    let mut c = Command::new(tool("certtool"));
    c.args(args).arg("--outfile").arg(out);
    let o = run_with_timeout(c, Duration::from_secs(60));
    assert!(
        o.status.success(),
        "certtool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn key(path: &Path) {
    certtool(&["--generate-privkey", "--key-type=rsa", "--bits=2048"], path);
}

fn template(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

impl Pki {
    pub fn make(dir: &TempDir) -> Pki {
        let root = dir.join("pki");
        let work = root.join("work");
        fs::create_dir_all(&work).unwrap();
        let p = |name: &str| work.join(name).to_str().unwrap().to_owned();

        // Two CAs: ours, and another that signs a client we must refuse.
        for ca in ["ca", "other-ca"] {
            key(&work.join(format!("{ca}-key.pem")));
            let info = template(
                &work,
                &format!("{ca}.info"),
                &format!("cn = {ca}\nca\ncert_signing_key\nexpiration_days = 30\n"),
            );
            certtool(
                &[
                    "--generate-self-signed",
                    "--load-privkey",
                    &p(&format!("{ca}-key.pem")),
                    "--template",
                    &info,
                ],
                &work.join(format!("{ca}-cert.pem")),
            );
        }
        let sign = |name: &str, info: &str, ca: &str| {
            key(&work.join(format!("{name}-key.pem")));
            let info = template(&work, &format!("{name}.info"), info);
            certtool(
                &[
                    "--generate-certificate",
                    "--load-ca-certificate",
                    &p(&format!("{ca}-cert.pem")),
                    "--load-ca-privkey",
                    &p(&format!("{ca}-key.pem")),
                    "--load-privkey",
                    &p(&format!("{name}-key.pem")),
                    "--template",
                    &info,
                ],
                &work.join(format!("{name}-cert.pem")),
            );
        };
        sign(
            "server",
            "organization = nbdbox tests\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n\
             tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n",
            "ca",
        );
        let client = |cn: &str| {
            format!(
                "organization = nbdbox tests\ncn = {cn}\ntls_www_client\nencryption_key\nsigning_key\n\
                 expiration_days = 30\n"
            )
        };
        sign("good", &client("good.example.com"), "ca");
        sign("revoked", &client("revoked.example.com"), "ca");
        sign("other-ca-client", &client("other.example.com"), "other-ca");
        sign(
            "expired",
            "cn = expired.example.com\ntls_www_client\nencryption_key\nsigning_key\n\
             activation_date = \"2020-01-01 00:00:00\"\nexpiration_date = \"2020-02-01 00:00:00\"\n",
            "ca",
        );
        let crl_info = template(&work, "crl.info", "crl_next_update = 30\ncrl_number = 1\n");
        certtool(
            &[
                "--generate-crl",
                "--load-ca-privkey",
                &p("ca-key.pem"),
                "--load-ca-certificate",
                &p("ca-cert.pem"),
                "--load-certificate",
                &p("revoked-cert.pem"),
                "--template",
                &crl_info,
            ],
            &work.join("ca-crl.pem"),
        );

        let server = root.join("server");
        fs::create_dir_all(&server).unwrap();
        for (from, to) in [
            ("ca-cert.pem", "ca-cert.pem"),
            ("server-cert.pem", "server-cert.pem"),
            ("server-key.pem", "server-key.pem"),
            ("ca-crl.pem", "ca-crl.pem"),
        ] {
            fs::copy(work.join(from), server.join(to)).unwrap();
        }
        for (client, ca, cert) in [
            ("good", "ca", Some("good")),
            ("no-cert", "ca", None),
            ("other-ca", "ca", Some("other-ca-client")),
            ("expired", "ca", Some("expired")),
            ("revoked", "ca", Some("revoked")),
            ("trusts-other-ca", "other-ca", Some("good")),
        ] {
            let dir = root.join("clients").join(client);
            fs::create_dir_all(&dir).unwrap();
            fs::copy(work.join(format!("{ca}-cert.pem")), dir.join("ca-cert.pem")).unwrap();
            if let Some(cert) = cert {
                fs::copy(work.join(format!("{cert}-cert.pem")), dir.join("client-cert.pem")).unwrap();
                fs::copy(work.join(format!("{cert}-key.pem")), dir.join("client-key.pem")).unwrap();
            }
        }

        let psk_dir = root.join("psk");
        fs::create_dir_all(&psk_dir).unwrap();
        let psk = psk_dir.join("keys.psk");
        psktool(&psk, "alice");
        Pki { server, psk, root }
    }

    /// The directory of client `name` (one of [`CLIENTS`]).
    pub fn client(&self, name: &str) -> PathBuf {
        assert!(CLIENTS.contains(&name), "no client {name}");
        self.root.join("clients").join(name)
    }

    /// A PSK directory (qemu's `tls-creds-psk,dir=` wants `keys.psk` in it) holding `user`
    /// with a key of its own: unknown to the server unless `user` is alice and `same_key`.
    pub fn psk_client(&self, name: &str, user: &str, same_key: bool) -> PathBuf {
        let dir = self.root.join("psk-clients").join(name);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.psk");
        if same_key {
            fs::copy(&self.psk, &file).unwrap();
        } else {
            psktool(&file, user);
        }
        dir
    }
}

fn psktool(file: &Path, user: &str) {
    let mut c = Command::new(tool("psktool"));
    c.args(["-u", user, "-p"]).arg(file);
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert!(o.status.success(), "psktool: {}", String::from_utf8_lossy(&o.stderr));
}
