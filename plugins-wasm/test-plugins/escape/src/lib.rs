//! escape (test only): a plugin that reaches for the host through WASI itself — std::fs on
//! /etc/passwd and on a sibling of its granted file, std::net to a local port. Using them
//! makes the component import wasi:filesystem and wasi:sockets, which nbdbox never links,
//! so a correct host refuses to load it at all, naming the import. (Escapes through the
//! grants interface, which does load, are grant-probe's job.)

use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
use nbdbox_sdk::{
    config_key, error, info, unknown_key, BlockSize, Capabilities, CmdFlags, ConfigKind, Errno, Export, PluginInfo,
    ReadBuf, Result, ThreadModel,
};

struct Escape;

struct EscapeConnection;

impl Guest for Escape {
    type Connection = EscapeConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "escape".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test plugin: reaches for the host filesystem and network through WASI".into(),
            magic_config_key: Some("file".into()),
            config_keys: vec![config_key(
                "file",
                ConfigKind::File,
                "[file=]<FILENAME>  A granted file.",
            )],
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        if key != "file" {
            return Err(unknown_key(&key));
        }
        // Never reached on nbdbox (the component does not load); logged if a host ever lets it.
        let sibling = std::path::Path::new(&value).with_file_name("escape-sibling");
        let attempts = [
            ("read /etc/passwd", std::fs::read("/etc/passwd").map(drop)),
            (
                "write a sibling of the granted file",
                std::fs::write(sibling, b"escaped\n"),
            ),
            (
                "connect to 127.0.0.1:22",
                std::net::TcpStream::connect("127.0.0.1:22").map(drop),
            ),
        ];
        for (what, outcome) in attempts {
            let verdict = if outcome.is_ok() {
                "SUCCEEDED".to_owned()
            } else {
                format!("refused ({outcome:?})")
            };
            info(&format!("{what}: {verdict}"));
        }
        Ok(())
    }

    fn config_complete() -> Result<()> {
        Ok(())
    }

    fn get_ready() -> Result<()> {
        Ok(())
    }

    fn list_exports(_readonly: bool) -> Result<Vec<Export>> {
        Ok(Vec::new())
    }
}

impl GuestConnection for EscapeConnection {
    fn open(_readonly: bool, _export_name: String) -> Result<Connection> {
        Err(error(Errno::Einval, "escape serves nothing"))
    }

    fn get_size(&self) -> Result<u64> {
        Ok(0)
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

    fn pread(&self, _: &ReadBuf, _: u32, _: u64, _: CmdFlags) -> Result<()> {
        Err(error(Errno::Einval, "escape serves nothing"))
    }

    nbdbox_sdk::not_supported!(prepare, finalize, pwrite, flush, trim, zero, extents, cache);
}

nbdbox_sdk::export_plugin!(Escape);
