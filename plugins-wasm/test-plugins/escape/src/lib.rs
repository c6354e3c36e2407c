//! escape: a test plugin that tries to get out of the sandbox during config-complete and
//! logs what happened, then serves its granted `file=` read-only. Not shipped.
//!
//! Every attempt must fail; each is logged at info level as
//! `escape: <what>: refused (<error>)` or `escape: <what>: SUCCEEDED`. The attempts use
//! std::fs and std::net, so this component imports wasi:filesystem and wasi:sockets; a host
//! that does not link those refuses to instantiate it at all, which is also a pass.

use std::cell::RefCell;
use std::fmt::Display;
use std::path::Path;

use nbdbox_sdk::grants::{open_file, File};
use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
use nbdbox_sdk::{
    config_key, error, info, unknown_key, BlockSize, Capabilities, CmdFlags, ConfigKind, Errno, Export, PluginInfo,
    ReadBuf, Result, ThreadModel,
};

thread_local! {
    /// The path given as `file=` (the host opened it; we only know its name).
    static PATH: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Log the outcome of one escape attempt.
fn report<T, E: Display>(what: &str, outcome: std::result::Result<T, E>) {
    match outcome {
        Ok(_) => info(&format!("{what}: SUCCEEDED")),
        Err(e) => info(&format!("{what}: refused ({e})")),
    }
}

fn try_to_escape(granted: &str) {
    report("open /etc/passwd", std::fs::File::open("/etc/passwd"));
    report(
        &format!("open the granted path {granted} with std::fs"),
        std::fs::File::open(granted),
    );
    let parent = Path::new(granted)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    report(
        &format!("list the directory {}", parent.display()),
        std::fs::read_dir(parent),
    );
    let sibling = parent.join("escape-sibling");
    report(
        &format!("create the sibling {}", sibling.display()),
        std::fs::write(&sibling, b"escaped\n"),
    );
    report(
        "grants::open-file(\"other\") for a key never granted",
        open_file("other").map_err(|e| format!("{:?}: {}", e.errno, e.message.unwrap_or_default())),
    );
    report("connect to 127.0.0.1:22", std::net::TcpStream::connect("127.0.0.1:22"));
}

struct Escape;

impl Guest for Escape {
    type Connection = EscapeConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "escape".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test plugin: tries to escape the sandbox, then serves file= read-only".into(),
            magic_config_key: Some("file".into()),
            config_keys: vec![config_key(
                "file",
                ConfigKind::File,
                "[file=]<FILENAME>  The file to serve (required).",
            )],
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        match key.as_str() {
            "file" => {
                PATH.set(Some(value));
                Ok(())
            }
            _ => Err(unknown_key(&key)),
        }
    }

    fn config_complete() -> Result<()> {
        let path = PATH
            .with_borrow(Clone::clone)
            .ok_or_else(|| error(Errno::Einval, "you must specify file=<FILENAME> on the command line"))?;
        try_to_escape(&path);
        Ok(())
    }

    fn get_ready() -> Result<()> {
        Ok(())
    }

    fn list_exports(_readonly: bool) -> Result<Vec<Export>> {
        Ok(Vec::new())
    }
}

struct EscapeConnection {
    file: File,
}

impl GuestConnection for EscapeConnection {
    fn open(_readonly: bool, _export_name: String) -> Result<Connection> {
        Ok(Connection::new(EscapeConnection {
            file: open_file("file")?,
        }))
    }

    fn get_size(&self) -> Result<u64> {
        self.file.size()
    }

    fn export_description(&self) -> Option<String> {
        None
    }

    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::default())
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(None)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.file.read_into(dst, 0, count, offset)
    }

    nbdbox_sdk::not_supported!(prepare, finalize, pwrite, flush, trim, zero, extents, cache);
}

nbdbox_sdk::export_plugin!(Escape);
