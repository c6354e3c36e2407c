//! The plugin API as the host sees it: the values that cross between layers (nbdkit's
//! nbdkit-plugin(3) and nbdkit-filter(3) in Rust types), free of WIT and wasmtime.
//!
//! `runtime` converts its generated bindings to and from these; `backend` validates and
//! emulates in their terms; `server` maps them onto the wire. Nothing here does anything.

use std::fmt;

/// How much concurrency a layer tolerates, least to most (nbdkit's thread models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadModel {
    SerializeConnections,
    SerializeAllRequests,
    SerializeRequests,
    Parallel,
}

impl ThreadModel {
    /// The name nbdkit prints in `--dump-plugin`.
    pub fn name(self) -> &'static str {
        match self {
            ThreadModel::SerializeConnections => "serialize_connections",
            ThreadModel::SerializeAllRequests => "serialize_all_requests",
            ThreadModel::SerializeRequests => "serialize_requests",
            ThreadModel::Parallel => "parallel",
        }
    }
}

/// nbdkit's tri-states for FUA, zero and cache: absent, emulated by the host, or native.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Support {
    None,
    Emulate,
    Native,
}

/// Every can_* answer of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub can_write: bool,
    pub can_flush: bool,
    pub is_rotational: bool,
    pub can_trim: bool,
    pub can_zero: Support,
    pub can_fast_zero: bool,
    pub can_extents: bool,
    pub can_fua: Support,
    pub can_multi_conn: bool,
    pub can_cache: Support,
}

impl Caps {
    /// Nothing supported: a read-only disk without flush, trim, zero, extents or cache.
    pub const NONE: Caps = Caps {
        can_write: false,
        can_flush: false,
        is_rotational: false,
        can_trim: false,
        can_zero: Support::None,
        can_fast_zero: false,
        can_extents: false,
        can_fua: Support::None,
        can_multi_conn: false,
        can_cache: Support::None,
    };
}

/// Request flags as nbdkit passes them to layers (NBDKIT_FLAG_*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    pub const NONE: Flags = Flags(0);
    pub const FUA: Flags = Flags(1 << 0);
    pub const MAY_TRIM: Flags = Flags(1 << 1);
    pub const REQ_ONE: Flags = Flags(1 << 2);
    pub const FAST_ZERO: Flags = Flags(1 << 3);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// True when no flag outside `allowed` is set.
    pub fn within(self, allowed: Flags) -> bool {
        self.0 & !allowed.0 == 0
    }
    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    pub fn with(self, other: Flags, on: bool) -> Flags {
        if on {
            Flags(self.0 | other.0)
        } else {
            self
        }
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// One extent of the `base:allocation` context: `hole` and `zero` are its two status bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub hole: bool,
    pub zero: bool,
}

/// A layer's preferred request sizes (NBD_INFO_BLOCK_SIZE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSize {
    pub minimum: u32,
    pub preferred: u32,
    pub maximum: u32,
}

/// The errno values a layer may report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    Perm,
    Io,
    NoMem,
    Inval,
    NoSpc,
    FBig,
    RoFs,
    NotSup,
    Overflow,
    Shutdown,
    Acces,
    NoEnt,
}

impl Errno {
    pub fn name(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::Io => "EIO",
            Errno::NoMem => "ENOMEM",
            Errno::Inval => "EINVAL",
            Errno::NoSpc => "ENOSPC",
            Errno::FBig => "EFBIG",
            Errno::RoFs => "EROFS",
            Errno::NotSup => "ENOTSUP",
            Errno::Overflow => "EOVERFLOW",
            Errno::Shutdown => "ESHUTDOWN",
            Errno::Acces => "EACCES",
            Errno::NoEnt => "ENOENT",
        }
    }
}

/// A failed call: the errno for the client, and the message the layer gave, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub errno: Errno,
    pub message: Option<String>,
}

impl Error {
    pub fn new(errno: Errno, message: impl Into<String>) -> Error {
        Error {
            errno,
            message: Some(message.into()),
        }
    }

    pub fn bare(errno: Errno) -> Error {
        Error { errno, message: None }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{message}"),
            None => write!(f, "{}", self.errno.name()),
        }
    }
}

/// One entry of NBD_OPT_LIST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportEntry {
    pub name: String,
    pub description: Option<String>,
}

/// What a config key's value is; every kind but text, size and bool is a grant the host
/// holds for the component (a file, a directory, an origin or endpoint to connect to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    Text,
    Size,
    Bool,
    File,
    /// A file the host creates if missing and opens for appending.
    OutputFile,
    Directory,
    /// A file, or a directory, the host opens read-only whatever `-r` says.
    InputFile,
    InputDirectory,
    /// A path whose existence the component may test, nothing more.
    TriggerFile,
    /// An http(s) URL whose origin the component may reach.
    Url,
    /// An NBD URI whose server the component may connect to.
    NbdUri,
    /// A Unix socket the component may connect to.
    UnixSocket,
    /// A host, and a port, the component may connect to together.
    TcpHost,
    TcpPort,
    /// A secret the host reads as nbdkit_read_password does, before `config` sees it.
    Password,
}

impl ConfigKind {
    /// The WIT spelling (`config-key.kind`); unknown spellings are refused at load.
    pub fn parse(kind: &str) -> Option<ConfigKind> {
        Some(match kind {
            "text" => ConfigKind::Text,
            "size" => ConfigKind::Size,
            "bool" => ConfigKind::Bool,
            "file" => ConfigKind::File,
            "output-file" => ConfigKind::OutputFile,
            "directory" => ConfigKind::Directory,
            "input-file" => ConfigKind::InputFile,
            "input-directory" => ConfigKind::InputDirectory,
            "trigger-file" => ConfigKind::TriggerFile,
            "url" => ConfigKind::Url,
            "nbd-uri" => ConfigKind::NbdUri,
            "unix-socket" => ConfigKind::UnixSocket,
            "tcp-host" => ConfigKind::TcpHost,
            "tcp-port" => ConfigKind::TcpPort,
            "password" => ConfigKind::Password,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::Text => "text",
            ConfigKind::Size => "size",
            ConfigKind::Bool => "bool",
            ConfigKind::File => "file",
            ConfigKind::OutputFile => "output-file",
            ConfigKind::Directory => "directory",
            ConfigKind::InputFile => "input-file",
            ConfigKind::InputDirectory => "input-directory",
            ConfigKind::TriggerFile => "trigger-file",
            ConfigKind::Url => "url",
            ConfigKind::NbdUri => "nbd-uri",
            ConfigKind::UnixSocket => "unix-socket",
            ConfigKind::TcpHost => "tcp-host",
            ConfigKind::TcpPort => "tcp-port",
            ConfigKind::Password => "password",
        }
    }

    /// Whether a value of this kind is an origin or endpoint to connect to.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            ConfigKind::Url | ConfigKind::NbdUri | ConfigKind::UnixSocket | ConfigKind::TcpHost | ConfigKind::TcpPort
        )
    }

    /// Whether a value of this kind is a grant the host holds for the component.
    pub fn is_grant(self) -> bool {
        !matches!(
            self,
            ConfigKind::Text | ConfigKind::Size | ConfigKind::Bool | ConfigKind::Password
        )
    }
}

#[derive(Clone, Debug)]
pub struct ConfigKey {
    pub name: String,
    pub kind: ConfigKind,
    pub help: String,
}

/// A component's static description (its `describe`).
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub magic_config_key: Option<String>,
    pub config_keys: Vec<ConfigKey>,
    pub thread_model: ThreadModel,
    pub shared_state: bool,
}

impl LayerInfo {
    pub fn key(&self, name: &str) -> Option<&ConfigKey> {
        self.config_keys.iter().find(|k| k.name == name)
    }
}
