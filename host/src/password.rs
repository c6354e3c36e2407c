//! Secrets given on the command line the way nbdkit reads them (nbdkit_read_password in
//! nbdkit's server/public.c): the value itself, `+FILE`, `-` or `-FD`. The host reads them, so
//! that a component gets the secret without being granted the file or the terminal.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

/// The secret `value` stands for. `stdin_free` is false under `-s`, where stdin is the client.
pub fn read_password(value: &str, stdin_free: bool) -> Result<String, String> {
    if let Some(path) = value.strip_prefix('+') {
        let text = std::fs::read_to_string(path).map_err(|e| format!("+{path}: {e}"))?;
        return Ok(first_line(&text).to_owned());
    }
    if value == "-" {
        if !stdin_free {
            return Err("stdin is not available for reading a password (-s)".into());
        }
        return from_terminal().map_err(|e| format!("reading a password from stdin: {e}"));
    }
    if let Some(fd) = value.strip_prefix('-') {
        let fd: i32 = fd.parse().map_err(|_| format!("'{value}' is neither -FD nor -"))?;
        if fd <= 2 {
            return Err(format!(
                "{value}: a password cannot be read from stdin, stdout or stderr this way"
            ));
        }
        // SAFETY: the descriptor was handed to this process to read the password from, and
        // nothing else in it uses descriptors it did not open itself.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| format!("{value}: {e}"))?;
        return Ok(first_line(&text).to_owned());
    }
    Ok(value.to_owned())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// One line from stdin; on a terminal, after a prompt and without echo.
fn from_terminal() -> io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    // SAFETY: stdin stays open for the life of the process.
    let stdin_fd = unsafe { BorrowedFd::borrow_raw(0) };
    let saved = tcgetattr(stdin_fd).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(stdin_fd, SetArg::TCSAFLUSH, &quiet);
        eprint!("password: ");
        let _ = io::stderr().flush();
    }
    let mut line = String::new();
    let read = io::stdin().lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = tcsetattr(stdin_fd, SetArg::TCSAFLUSH, saved);
        eprintln!();
    }
    read?;
    Ok(first_line(&line).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_file_forms() {
        assert_eq!(read_password("secret", true).unwrap(), "secret");
        let path = std::env::temp_dir().join(format!("nbdbox-pw-{}", std::process::id()));
        std::fs::write(&path, "from-file\nignored\n").unwrap();
        assert_eq!(
            read_password(&format!("+{}", path.display()), true).unwrap(),
            "from-file"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(read_password("+/nonexistent/pw", true)
            .unwrap_err()
            .contains("/nonexistent/pw"));
        assert!(read_password("-", false).unwrap_err().contains("-s"));
        assert!(read_password("-1", true).is_err());
        assert!(read_password("-x", true).is_err());
    }
}
