//! Captive mode (`--run CMD`): the command runs under /bin/sh once the server listens, with
//! shell variables describing how to reach it, and its exit status becomes ours.

use crate::server::tls::Credentials;
use std::process::{Child, Command, ExitStatus};

/// Where the server listens, as the variables describe it.
pub enum Endpoint<'a> {
    Tcp { port: &'a str },
    Unix { socket: &'a str },
}

/// The NBD URI of the endpoint (`$uri`, and what `--print-uri` prints), in the form the NBD
/// project documents, as nbdkit's server/uri.c makes it. Under `--tls=require` it is an
/// `nbds` URI that carries what a client needs (nbdkit ≥ 1.40): the certificate directory,
/// or the PSK file and its first user.
pub fn uri(endpoint: &Endpoint<'_>, export_name: &str, tls: Option<&Credentials>) -> String {
    let name_path = if export_name.is_empty() {
        String::new()
    } else {
        format!("/{}", uri_quote(export_name))
    };
    let s = if tls.is_some() { "s" } else { "" };
    let user = match tls {
        Some(Credentials::Psk { user, .. }) => format!("{}@", uri_quote(user)),
        _ => String::new(),
    };
    let credentials = match tls {
        None => String::new(),
        Some(Credentials::Certificates(dir)) => format!("tls-certificates={}", uri_quote(&dir.to_string_lossy())),
        Some(Credentials::Psk { file, .. }) => format!("tls-psk-file={}", uri_quote(&file.to_string_lossy())),
    };
    match endpoint {
        Endpoint::Tcp { port } => {
            let query = if credentials.is_empty() {
                String::new()
            } else {
                format!("?{credentials}")
            };
            format!("nbd{s}://{user}localhost:{port}{name_path}{query}")
        }
        Endpoint::Unix { socket } => {
            let and = if credentials.is_empty() {
                String::new()
            } else {
                format!("&{credentials}")
            };
            format!("nbd{s}+unix://{user}{name_path}?socket={}{and}", uri_quote(socket))
        }
    }
}

/// What `--print-uri` prints: the URI alone on a line for a script, with a shell-quoted
/// copy and a command to query it when a person reads it on a terminal (nbdkit(1), "NBD
/// URIs and endpoints").
pub fn print_uri_text(uri: &str, for_terminal: bool) -> String {
    if for_terminal {
        let quoted = shell_quote(uri);
        format!("{uri}\nShell-quoted URI: {quoted}\nCommand to query the NBD endpoint:\n  nbdinfo {quoted}\n")
    } else {
        format!("{uri}\n")
    }
}

/// The script given to `/bin/sh -c`: the variables (plain shell variables, as nbdkit sets
/// them, not exported), then the command verbatim.
pub fn script(endpoint: &Endpoint<'_>, export_name: &str, tls: Option<&Credentials>, command: &str) -> String {
    // guestfish accepts only the nbd:// URI forms; qemu takes its own legacy syntax.
    let for_guestfish = command.contains("guestfish");
    let (nbd, port, socket) = match endpoint {
        Endpoint::Tcp { port } => {
            let nbd = if for_guestfish {
                format!("nbd://localhost:{port}")
            } else {
                format!("nbd:localhost:{port}")
            };
            (nbd, *port, "")
        }
        Endpoint::Unix { socket } => {
            let nbd = if for_guestfish {
                format!("nbd://?socket={socket}")
            } else {
                format!("nbd:unix:{socket}")
            };
            (nbd, "", *socket)
        }
    };
    format!(
        "uri={}\nnbd={}\nport={}\nunixsocket={}\nexportname={}\n{command}\n",
        shell_quote(&uri(endpoint, export_name, tls)),
        shell_quote(&nbd),
        shell_quote(port),
        shell_quote(socket),
        shell_quote(export_name),
    )
}

/// Percent-encode every byte outside `[A-Za-z0-9._~/-]`, as nbdkit does for `$uri`.
fn uri_quote(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'~' | b'/' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Bare when safe for the shell, else in double quotes with `$ \` \\ "` escaped.
fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || ".,:/=_-".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        return text.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in text.chars() {
        if matches!(c, '$' | '`' | '\\' | '"') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Start the command; stdin, stdout and stderr are ours.
pub fn spawn(script: &str) -> std::io::Result<Child> {
    Command::new("/bin/sh").arg("-c").arg(script).spawn()
}

/// Wait for the command to exit. A signal that stops the server is passed on to the command
/// first, so that it does not run on without its server: the command then exits as a
/// Ctrl-C to the whole process group would have made it exit, and its status says so. A
/// shutdown without a signal (a component asking) leaves the command running, as nbdkit's.
pub fn wait(mut child: Child, shutdown: &crate::shutdown::Shutdown) -> std::io::Result<ExitStatus> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return child.wait();
    }
    // SAFETY: the descriptor was just opened and nothing else owns it.
    let exited = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if let Some(signal) = crate::shutdown::signal_received() {
            for process in process_tree(pid) {
                // SAFETY: kill(2) on the command's processes; the shell itself is our child,
                // not yet reaped, so its pid cannot have been reused.
                unsafe { libc::kill(process, signal) };
            }
            return child.wait();
        }
        // Until a shutdown is requested, its pipe wakes us; after one without a signal, a
        // later signal is looked for every 100 ms.
        let mut fds = vec![PollFd::new(exited.as_fd(), PollFlags::POLLIN)];
        if !shutdown.requested() {
            fds.push(PollFd::new(shutdown.wake_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `root` and every process descending from it, from /proc: the processes a Ctrl-C to the
/// command's terminal would reach, without touching the process group the command shares
/// with whoever started nbdbox.
fn process_tree(root: libc::pid_t) -> Vec<libc::pid_t> {
    let parents: Vec<(libc::pid_t, libc::pid_t)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The parent is the second field after the parenthesised command name.
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect();
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        next += 1;
    }
    tree
}

/// The command's status as an exit code: its own, or 128+S when signal S killed it.
pub fn exit_code(status: ExitStatus, log: &crate::log::Log) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => {
            crate::log::error!(log, "external command was killed by signal {signal}");
            (128 + signal) as u8
        }
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_default_export() {
        let s = script(
            &Endpoint::Unix {
                socket: "/tmp/nbdboxAb/socket",
            },
            "",
            None,
            "qemu-img info $nbd",
        );
        assert_eq!(
            s,
            "uri=\"nbd+unix://?socket=/tmp/nbdboxAb/socket\"\nnbd=nbd:unix:/tmp/nbdboxAb/socket\nport=\"\"\nunixsocket=/tmp/nbdboxAb/socket\nexportname=\"\"\nqemu-img info $nbd\n"
        );
    }

    #[test]
    fn tcp_named_export_and_guestfish() {
        let s = script(&Endpoint::Tcp { port: "10809" }, "a b/c?é", None, "guestfish -a $nbd");
        assert!(s.starts_with("uri=\"nbd://localhost:10809/a%20b/c%3F%C3%A9\"\nnbd=nbd://localhost:10809\nport=10809\nunixsocket=\"\"\nexportname=\"a b/c?é\"\n"), "{s}");
    }

    #[test]
    fn unix_guestfish_form() {
        let s = script(&Endpoint::Unix { socket: "/s" }, "disk", None, "guestfish --ro -a $nbd");
        assert!(
            s.contains("uri=\"nbd+unix:///disk?socket=/s\"\nnbd=\"nbd://?socket=/s\"\n"),
            "{s}"
        );
    }

    #[test]
    fn print_uri_forms() {
        let uri = uri(&Endpoint::Unix { socket: "/tmp/s" }, "", None);
        assert_eq!(print_uri_text(&uri, false), "nbd+unix://?socket=/tmp/s\n");
        assert_eq!(
            print_uri_text(&uri, true),
            "nbd+unix://?socket=/tmp/s\nShell-quoted URI: \"nbd+unix://?socket=/tmp/s\"\n\
             Command to query the NBD endpoint:\n  nbdinfo \"nbd+unix://?socket=/tmp/s\"\n"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("plain-1.2:3/4=5,_"), "plain-1.2:3/4=5,_");
        assert_eq!(shell_quote(""), "\"\"");
        assert_eq!(shell_quote("a\"$`\\b c"), "\"a\\\"\\$\\`\\\\b c\"");
    }

    #[test]
    fn tls_uris_carry_the_credentials() {
        let unix = Endpoint::Unix { socket: "/tmp/s" };
        let certs = Credentials::Certificates("/etc/pki/nbdkit".into());
        assert_eq!(
            uri(&unix, "", Some(&certs)),
            "nbds+unix://?socket=/tmp/s&tls-certificates=/etc/pki/nbdkit"
        );
        let psk = Credentials::Psk {
            file: "/k/keys.psk".into(),
            user: "alice".into(),
        };
        assert_eq!(
            uri(&Endpoint::Tcp { port: "10809" }, "d", Some(&psk)),
            "nbds://alice@localhost:10809/d?tls-psk-file=/k/keys.psk"
        );
    }
}
