//! grant-probe (test only): a plugin granted a file (`file=`) and a directory (`dir=`) that,
//! at get-ready, tries to reach beyond them through the grants interface itself — the only
//! way it has to the host filesystem — and logs each outcome as `grant-probe: WHAT: refused
//! (WHY)` or `grant-probe: WHAT: SUCCEEDED`. Then it serves the granted file read-only, so a
//! test can check the server stayed up and serves the right bytes.

use nbdbox_sdk::grants::{open_directory, open_file, File};
use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
use nbdbox_sdk::{
    config_key, error, info, unknown_key, BlockSize, Capabilities, CmdFlags, ConfigKind, Errno, Error, Export,
    PluginInfo, ReadBuf, Result, ThreadModel,
};

fn report<T>(what: &str, outcome: std::result::Result<T, Error>) {
    match outcome {
        Ok(_) => info(&format!("{what}: SUCCEEDED")),
        Err(e) => info(&format!(
            "{what}: refused ({:?}: {})",
            e.errno,
            e.message.unwrap_or_default()
        )),
    }
}

fn probe() {
    report("open-file for a key never granted", open_file("other"));
    report("open-file on the directory key", open_file("dir"));
    report("open-directory on the file key", open_directory("file"));
    match open_directory("dir") {
        Ok(dir) => {
            for name in ["../outside.img", "/etc/passwd", "..", ".", "sub/inner.img", "sub", ""] {
                report(&format!("directory.open({name:?})"), dir.open(name, false));
            }
        }
        Err(e) => report("open-directory on the directory key", Err::<(), _>(e)),
    }
    match open_file("file") {
        Ok(file) => report("write to a file granted read-only", file.write(b"x", 0)),
        Err(e) => report("open-file on the file key", Err::<(), _>(e)),
    }
}

struct Probe;

struct ProbeConnection {
    file: File,
}

impl Guest for Probe {
    type Connection = ProbeConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "grant-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test plugin: try to reach beyond its grants".into(),
            magic_config_key: None,
            config_keys: vec![
                config_key("file", ConfigKind::File, "The file to serve."),
                config_key("dir", ConfigKind::Directory, "A directory to probe."),
            ],
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    fn config(key: String, _value: String) -> Result<()> {
        match key.as_str() {
            "file" | "dir" => Ok(()),
            _ => Err(unknown_key(&key)),
        }
    }

    fn config_complete() -> Result<()> {
        Ok(())
    }

    fn get_ready() -> Result<()> {
        probe();
        Ok(())
    }

    fn list_exports(_readonly: bool) -> Result<Vec<Export>> {
        Ok(Vec::new())
    }
}

impl GuestConnection for ProbeConnection {
    fn open(_readonly: bool, _export_name: String) -> Result<Connection> {
        Ok(Connection::new(ProbeConnection {
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
        if count == 0 {
            return Err(error(Errno::Einval, "empty read"));
        }
        self.file.read_into(dst, 0, count, offset)
    }

    nbdbox_sdk::not_supported!(prepare, finalize, pwrite, flush, trim, zero, extents, cache);
}

nbdbox_sdk::export_plugin!(Probe);
