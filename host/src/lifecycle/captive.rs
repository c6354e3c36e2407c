//! Captive mode (`--run CMD`): the command runs under /bin/sh once the server listens, with
//! shell variables describing how to reach it, and its exit status becomes ours.

use std::process::{Child, Command, ExitStatus};

/// Where the server listens, as the variables describe it.
pub enum Endpoint<'a> {
    Tcp { port: &'a str },
    Unix { socket: &'a str },
}

/// The script given to `/bin/sh -c`: the variables (plain shell variables, as nbdkit sets
/// them, not exported), then the command verbatim.
pub fn script(endpoint: &Endpoint<'_>, export_name: &str, command: &str) -> String {
    let name_path = if export_name.is_empty() {
        String::new()
    } else {
        format!("/{}", uri_quote(export_name))
    };
    // guestfish accepts only the nbd:// URI forms; qemu takes its own legacy syntax.
    let for_guestfish = command.contains("guestfish");
    let (uri, nbd, port, socket) = match endpoint {
        Endpoint::Tcp { port } => {
            let nbd = if for_guestfish {
                format!("nbd://localhost:{port}")
            } else {
                format!("nbd:localhost:{port}")
            };
            (format!("nbd://localhost:{port}{name_path}"), nbd, *port, "")
        }
        Endpoint::Unix { socket } => {
            let nbd = if for_guestfish {
                format!("nbd://?socket={socket}")
            } else {
                format!("nbd:unix:{socket}")
            };
            (
                format!("nbd+unix://{name_path}?socket={}", uri_quote(socket)),
                nbd,
                "",
                *socket,
            )
        }
    };
    format!(
        "uri={}\nnbd={}\nport={}\nunixsocket={}\nexportname={}\n{command}\n",
        shell_quote(&uri),
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
            "qemu-img info $nbd",
        );
        assert_eq!(
            s,
            "uri=\"nbd+unix://?socket=/tmp/nbdboxAb/socket\"\nnbd=nbd:unix:/tmp/nbdboxAb/socket\nport=\"\"\nunixsocket=/tmp/nbdboxAb/socket\nexportname=\"\"\nqemu-img info $nbd\n"
        );
    }

    #[test]
    fn tcp_named_export_and_guestfish() {
        let s = script(&Endpoint::Tcp { port: "10809" }, "a b/c?é", "guestfish -a $nbd");
        assert!(s.starts_with("uri=\"nbd://localhost:10809/a%20b/c%3F%C3%A9\"\nnbd=nbd://localhost:10809\nport=10809\nunixsocket=\"\"\nexportname=\"a b/c?é\"\n"), "{s}");
    }

    #[test]
    fn unix_guestfish_form() {
        let s = script(&Endpoint::Unix { socket: "/s" }, "disk", "guestfish --ro -a $nbd");
        assert!(
            s.contains("uri=\"nbd+unix:///disk?socket=/s\"\nnbd=\"nbd://?socket=/s\"\n"),
            "{s}"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("plain-1.2:3/4=5,_"), "plain-1.2:3/4=5,_");
        assert_eq!(shell_quote(""), "\"\"");
        assert_eq!(shell_quote("a\"$`\\b c"), "\"a\\\"\\$\\`\\\\b c\"");
    }
}
