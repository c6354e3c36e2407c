//! TLS for NBD connections, as nbdkit-tls(1) describes it: X.509 certificates from a
//! directory (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`, optional `ca-crl.pem`) or
//! pre-shared keys from a psktool file, offered by NBD_OPT_STARTTLS during option haggling.
//!
//! OpenSSL (unlike GnuTLS, which nbdkit uses) does not let one thread read a session while
//! another writes it. A connection's reader and writer run on different workers, so the
//! session sits behind a lock that is held only while OpenSSL works, with the socket
//! non-blocking: a worker waiting for the client waits in poll(2), outside the lock.

use super::transport::Transport;
use crate::config::{TlsMode, TlsSettings};
use crate::log::{self, Log};
use anyhow::{bail, Context as _, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use openssl::ssl::{ErrorCode, HandshakeError, SslAcceptor, SslFiletype, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::{CrlStatus, X509Crl, X509NameRef, X509Ref, X509};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The server's TLS: its mode, and how it accepts a client's upgrade.
pub struct Tls {
    mode: TlsMode,
    acceptor: Option<SslAcceptor>,
    /// What a client needs besides the socket, for `$uri` (nbdkit ≥ 1.40 puts it there).
    credentials: Option<Credentials>,
}

/// The credentials the server was started with.
#[derive(Clone, Debug)]
pub enum Credentials {
    Certificates(PathBuf),
    /// The PSK file, and its first user.
    Psk {
        file: PathBuf,
        user: String,
    },
}

impl Tls {
    /// No TLS: STARTTLS is refused.
    pub fn off() -> Tls {
        Tls {
            mode: TlsMode::Off,
            acceptor: None,
            credentials: None,
        }
    }

    /// nbdkit's rules: `--tls-psk` enables TLS (and overrides certificates); certificates
    /// given with `--tls-certificates` must load; without it the default directories are
    /// tried, and TLS is on when one loads, off otherwise. `--tls=on` without credentials
    /// warns and serves without TLS; `--tls=require` without them is an error.
    pub fn configure(settings: &TlsSettings, log: &Log) -> Result<Tls> {
        if settings.mode == Some(TlsMode::Off) {
            return Ok(Tls::off());
        }
        let loaded = if let Some(file) = &settings.psk {
            let (acceptor, user) = psk_acceptor(file).with_context(|| format!("--tls-psk={}", file.display()))?;
            Some((
                acceptor,
                Credentials::Psk {
                    file: std::path::absolute(file)?,
                    user,
                },
            ))
        } else if let Some(dir) = &settings.certificates {
            let acceptor = x509_acceptor(dir, settings.verify_peer)
                .with_context(|| format!("--tls-certificates={}", dir.display()))?;
            Some((acceptor, Credentials::Certificates(std::path::absolute(dir)?)))
        } else {
            default_certificates(settings.verify_peer, log)
        };
        let Some((acceptor, credentials)) = loaded else {
            return match settings.mode {
                Some(TlsMode::Require) => {
                    bail!("--tls=require: no TLS certificates could be loaded (give --tls-certificates or --tls-psk)")
                }
                Some(TlsMode::On) => {
                    log::warning!(log, "--tls=on: no TLS certificates could be loaded: TLS is disabled");
                    Ok(Tls::off())
                }
                _ => Ok(Tls::off()),
            };
        };
        Ok(Tls {
            mode: settings.mode.unwrap_or(TlsMode::On),
            acceptor: Some(acceptor),
            credentials: Some(credentials),
        })
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The TLS handshake on a connection whose STARTTLS was just acknowledged: the session
    /// that replaces `transport` (which goes on holding the socket until it is dropped).
    pub fn upgrade(&self, transport: &Transport) -> io::Result<Transport> {
        let Some(acceptor) = &self.acceptor else {
            return Err(io::Error::other("TLS is not enabled"));
        };
        let peer_name = transport.peer_name();
        let socket: OwnedFd = match transport {
            Transport::Tcp(s) => s.try_clone()?.into(),
            Transport::Unix(s) => s.try_clone()?.into(),
            Transport::Stdio { .. } | Transport::Tls(_) => {
                return Err(io::Error::other("TLS is offered on sockets only"))
            }
        };
        let stream = match acceptor.accept(File::from(socket)) {
            Ok(stream) => stream,
            Err(HandshakeError::Failure(mid)) => {
                return Err(io::Error::other(format!("TLS handshake failed: {}", mid.error())))
            }
            Err(HandshakeError::WouldBlock(_)) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
            }
            Err(HandshakeError::SetupFailure(e)) => return Err(io::Error::other(e)),
        };
        let certificate = stream.ssl().peer_certificate();
        let peer = TlsPeer {
            subject_dn: certificate.as_ref().map(|c| rfc4514(c.subject_name())),
            issuer_dn: certificate.as_ref().map(|c| rfc4514(c.issuer_name())),
        };
        let fd = stream.get_ref().as_raw_fd();
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
        Ok(Transport::Tls(Box::new(TlsStream {
            session: Mutex::new(stream),
            fd,
            peer_name,
            peer,
        })))
    }
}

/// What the client's certificate says, for nbdkit_peer_tls_dn and friends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPeer {
    pub subject_dn: Option<String>,
    pub issuer_dn: Option<String>,
}

/// One client's TLS session over its socket.
pub struct TlsStream {
    session: Mutex<SslStream<File>>,
    /// The socket, owned by the session, for poll(2).
    fd: RawFd,
    peer_name: Option<String>,
    peer: TlsPeer,
}

/// Replies up to this size are written as one TLS record: one write(2), one record header.
const COALESCE: usize = 16 << 10;

impl TlsStream {
    fn session(&self) -> MutexGuard<'_, SslStream<File>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn peer_name(&self) -> Option<String> {
        self.peer_name.clone()
    }

    pub fn peer(&self) -> &TlsPeer {
        &self.peer
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the session owns the descriptor and lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// Decrypted bytes waiting in the session, which poll(2) on the socket cannot see.
    pub fn has_pending(&self) -> bool {
        self.session().ssl().pending() > 0
    }

    /// Wait until the socket can do what OpenSSL asked for.
    fn wait(&self, code: ErrorCode) -> io::Result<()> {
        let flags = if code == ErrorCode::WANT_WRITE {
            PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        let mut fds = [PollFd::new(self.fd(), flags)];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Run one OpenSSL call under the lock, waiting outside it while the socket is not ready.
    fn retry<R>(&self, mut call: impl FnMut(&mut SslStream<File>) -> Result<R, openssl::ssl::Error>) -> io::Result<R> {
        loop {
            let outcome = call(&mut self.session());
            match outcome {
                Ok(value) => return Ok(value),
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => self.wait(e.code())?,
                Err(e) => return Err(e.into_io_error().unwrap_or_else(io::Error::other)),
            }
        }
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.retry(|s| match s.ssl_read(buf) {
            // A clean close_notify, or a client that just closed the socket: end of file.
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => Ok(0),
            Err(e) if e.code() == ErrorCode::SYSCALL && e.io_error().is_none() => Ok(0),
            other => other,
        })
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.retry(|s| s.ssl_write(buf))
    }

    /// A small reply's pieces go out as one record.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > COALESCE || bufs.len() < 2 {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return self.write(first);
        }
        let mut joined = Vec::with_capacity(total);
        for buf in bufs {
            joined.extend_from_slice(buf);
        }
        let mut written = 0;
        while written < total {
            written += self.write(&joined[written..])?;
        }
        Ok(total)
    }
}

/// A distinguished name as nbdkit_peer_tls_dn gives it (RFC 4514: most specific first,
/// `CN=client.example.com,O=Example,C=US`).
fn rfc4514(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("UNKNOWN");
            let value = entry.data().to_string().unwrap_or_default();
            let mut escaped = String::with_capacity(value.len());
            for (i, c) in value.chars().enumerate() {
                let leading = i == 0 && (c == ' ' || c == '#');
                let trailing = i + 1 == value.chars().count() && c == ' ';
                if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || leading || trailing {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            format!("{key}={escaped}")
        })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// nbdkit's default certificate directories: for root `/etc/pki/nbdkit`, otherwise
/// `$HOME/.pki/nbdkit` then `$HOME/.config/pki/nbdkit`.
fn default_certificates(verify_peer: bool, log: &Log) -> Option<(SslAcceptor, Credentials)> {
    let dirs: Vec<PathBuf> = if nix::unistd::geteuid().is_root() {
        vec![PathBuf::from("/etc/pki/nbdkit")]
    } else {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        vec![home.join(".pki/nbdkit"), home.join(".config/pki/nbdkit")]
    };
    for dir in dirs {
        match x509_acceptor(&dir, verify_peer) {
            Ok(acceptor) => return Some((acceptor, Credentials::Certificates(dir))),
            Err(e) => log::debug!(log, "TLS certificates not loaded from {}: {e:#}", dir.display()),
        }
    }
    None
}

fn acceptor_builder() -> Result<openssl::ssl::SslAcceptorBuilder> {
    #[cfg(libssl_on_demand)]
    crate::libssl::load().map_err(anyhow::Error::msg)?;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    if let Some(path) = std::env::var_os("SSLKEYLOGFILE").filter(|p| !p.is_empty()) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("SSLKEYLOGFILE={}", PathBuf::from(&path).display()))?;
        let file = Mutex::new(file);
        builder.set_keylog_callback(move |_, line| {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = file.write_all(format!("{line}\n").as_bytes());
        });
    }
    Ok(builder)
}

/// An acceptor with the server's certificate; with `verify_peer`, clients must present a
/// certificate signed by `ca-cert.pem` and not revoked in `ca-crl.pem`.
fn x509_acceptor(dir: &Path, verify_peer: bool) -> Result<SslAcceptor> {
    let file = |name: &str| {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(anyhow::anyhow!("{} is missing", path.display()))
        }
    };
    // Looked for before OpenSSL is set up: a server started without --tls tries the default
    // directories, and setting up OpenSSL for none costs a millisecond or two of startup.
    let (cert, key) = (file("server-cert.pem")?, file("server-key.pem")?);
    let mut builder = acceptor_builder()?;
    builder.set_certificate_chain_file(cert).context("server-cert.pem")?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .context("server-key.pem")?;
    builder
        .check_private_key()
        .context("server-key.pem does not match server-cert.pem")?;
    if verify_peer {
        let ca = file("ca-cert.pem")?;
        builder.set_ca_file(&ca).context("ca-cert.pem")?;
        let mode = SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        match revocations(dir, &ca)? {
            Some(crl) => builder.set_verify_callback(mode, move |chain_ok, context| {
                let leaf = context.error_depth() == 0;
                chain_ok && !(leaf && context.current_cert().is_none_or(|cert| revoked(&crl, cert)))
            }),
            None => builder.set_verify(mode),
        }
        builder.set_session_id_context(b"nbdbox")?;
    }
    Ok(builder.build())
}

/// `ca-crl.pem`, if there is one, checked against the CA. GnuTLS (nbdkit's library) takes a
/// CRL signed by a CA certificate without the cRLSign key usage, as nbdkit-tls(1)'s CA
/// template makes it; OpenSSL's own CRL check would refuse every client then, so the client's
/// certificate is looked up here instead.
fn revocations(dir: &Path, ca: &Path) -> Result<Option<X509Crl>> {
    let path = dir.join("ca-crl.pem");
    if !path.is_file() {
        return Ok(None);
    }
    let crl = X509Crl::from_pem(&std::fs::read(&path)?).context("ca-crl.pem")?;
    let ca = X509::from_pem(&std::fs::read(ca)?).context("ca-cert.pem")?;
    if !crl.verify(&*ca.public_key()?)? {
        bail!("ca-crl.pem is not signed by ca-cert.pem");
    }
    Ok(Some(crl))
}

fn revoked(crl: &X509Crl, cert: &X509Ref) -> bool {
    matches!(crl.get_by_cert(&cert.to_owned()), CrlStatus::Revoked(_))
}

/// psktool's file: `username:hexkey` lines.
fn read_psk_file(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let text = std::fs::read_to_string(path)?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let Some((user, hex)) = line.split_once(':') else {
            bail!("line {}: expected username:hexkey", n + 1);
        };
        let key = decode_hex(hex.trim()).with_context(|| format!("line {}: the key is not hexadecimal", n + 1))?;
        keys.push((user.to_owned(), key));
    }
    if keys.is_empty() {
        bail!("no keys in the file");
    }
    Ok(keys)
}

fn decode_hex(hex: &str) -> Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || hex.is_empty() {
        bail!("odd length");
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(Into::into))
        .collect()
}

/// An acceptor that knows the clients by their PSK identity; the first user is returned for
/// `$uri`.
fn psk_acceptor(path: &Path) -> Result<(SslAcceptor, String)> {
    let keys = read_psk_file(path)?;
    let first_user = keys[0].0.clone();
    let keys: Arc<HashMap<Vec<u8>, Vec<u8>>> =
        Arc::new(keys.into_iter().map(|(user, key)| (user.into_bytes(), key)).collect());
    let mut builder = acceptor_builder()?;
    // TLS 1.3 uses the same callback (external PSK with ECDHE, as GnuTLS clients offer);
    // TLS 1.2 clients need PSK cipher suites.
    builder.set_cipher_list(
        "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:\
         DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:DHE-PSK-CHACHA20-POLY1305:\
         PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305",
    )?;
    builder.set_psk_server_callback(move |_, identity, psk| {
        // An unknown user gets no key: the handshake fails.
        match identity.and_then(|user| keys.get(user)) {
            Some(key) if key.len() <= psk.len() => {
                psk[..key.len()].copy_from_slice(key);
                Ok(key.len())
            }
            _ => Ok(0),
        }
    });
    Ok((builder.build(), first_user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_files_as_psktool_writes_them() {
        let path = std::env::temp_dir().join(format!("nbdbox-psk-{}", std::process::id()));
        std::fs::write(&path, "alice:0a0B\nbob:ff\n").unwrap();
        let keys = read_psk_file(&path).unwrap();
        assert_eq!(keys, [("alice".into(), vec![0x0a, 0x0b]), ("bob".into(), vec![0xff])]);
        std::fs::write(&path, "alice:xyz\n").unwrap();
        assert!(read_psk_file(&path).is_err());
        std::fs::write(&path, "\n").unwrap();
        assert!(read_psk_file(&path).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
