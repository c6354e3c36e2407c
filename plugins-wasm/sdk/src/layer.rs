//! What the plugin adapter and the filter SDK's adapter share: where the layer's value lives,
//! its metadata, and how a config key is routed. Not for component authors.

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::nbdbox::plugin::types::{ConfigKey, PluginInfo};
use crate::{Key, ThreadModel};

#[doc(hidden)]
pub use crate::__register;

/// Implemented for the registered type by `plugin!` / `filter!`, which see the component
/// crate's `CARGO_PKG_VERSION`.
pub trait Version {
    const VERSION: &'static str;
}

/// A layer's static metadata: the WIT `plugin-info` but for the version.
pub struct Meta {
    pub name: &'static str,
    pub description: &'static str,
    pub magic_config_key: Option<&'static str>,
    pub config_keys: &'static [Key],
    pub thread_model: ThreadModel,
    pub shared_state: bool,
}

impl Meta {
    /// The answer to `describe`.
    pub fn describe(&self, version: &str) -> PluginInfo {
        PluginInfo {
            name: self.name.into(),
            version: version.into(),
            description: self.description.into(),
            magic_config_key: self.magic_config_key.map(Into::into),
            config_keys: self
                .config_keys
                .iter()
                .map(|key| ConfigKey {
                    name: key.name.into(),
                    kind: key.kind.as_str().into(),
                    help: key.help.into(),
                })
                .collect(),
            thread_model: self.thread_model,
            shared_state: self.shared_state,
        }
    }

    /// Whether `key` is one the layer declared (and so handles itself).
    pub fn declares(&self, key: &str) -> bool {
        self.config_keys.iter().any(|k| k.name == key)
    }
}

thread_local! {
    /// The instance's plugin or filter value. A component holds exactly one layer type, so
    /// the downcast in [`with`] and [`with_mut`] always succeeds.
    static LAYER: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

const ONE_LAYER: &str = "a component registers exactly one plugin or filter type";

/// Borrow the layer's value (made with `Default` on first use) for a call that only reads it.
pub fn with<T: Default + 'static, R>(f: impl FnOnce(&T) -> R) -> R {
    LAYER.with(|layer| {
        if layer.borrow().is_none() {
            layer.replace(Some(Box::new(T::default())));
        }
        f(layer
            .borrow()
            .as_deref()
            .and_then(<dyn Any>::downcast_ref)
            .expect(ONE_LAYER))
    })
}

/// Borrow the layer's value mutably (configuration, get-ready, cleanup).
pub fn with_mut<T: Default + 'static, R>(f: impl FnOnce(&mut T) -> R) -> R {
    LAYER.with_borrow_mut(|layer| {
        let value = layer.get_or_insert_with(|| Box::new(T::default()));
        f(value.downcast_mut().expect(ONE_LAYER))
    })
}

/// The global calls both adapters make the same way, for the plugin or filter type `$layer`:
/// its method of the same name on the layer's value.
#[doc(hidden)]
#[macro_export]
macro_rules! __layer_calls {
    ($layer:ty) => {
        fn get_thread_model() -> $crate::ThreadModel {
            $crate::layer::with(<$layer>::thread_model)
        }

        fn get_ready() -> $crate::Result<()> {
            $crate::layer::with_mut(<$layer>::get_ready)
        }

        fn cleanup() {
            $crate::layer::with_mut(<$layer>::cleanup)
        }

        fn preconnect(readonly: bool) -> $crate::Result<()> {
            $crate::layer::with(|layer: &$layer| layer.preconnect(readonly))
        }

        fn list_exports(readonly: bool) -> $crate::Result<Vec<$crate::Export>> {
            $crate::layer::with(|layer: &$layer| layer.list_exports(readonly))
        }

        fn default_export(readonly: bool) -> Option<String> {
            $crate::layer::with(|layer: &$layer| layer.default_export(readonly))
        }
    };
}

/// The connection calls both adapters pass on the same way: to the component's connection
/// value `self.$value`, with `&self.$next` (the layer below) first for a filter.
#[doc(hidden)]
#[macro_export]
macro_rules! __connection_calls {
    ($value:tt $(, $next:ident)?) => {
        fn get_size(&self) -> $crate::Result<u64> {
            self.$value.get_size($(&self.$next)?)
        }

        fn export_description(&self) -> Option<String> {
            self.$value.export_description($(&self.$next)?)
        }

        fn capabilities(&self) -> $crate::Result<$crate::Capabilities> {
            self.$value.capabilities($(&self.$next)?)
        }

        fn block_size(&self) -> $crate::Result<Option<$crate::BlockSize>> {
            self.$value.block_size($(&self.$next)?)
        }

        fn pread(&self, dst: &$crate::ReadBuf, count: u32, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$value.pread($(&self.$next,)? dst, count, offset, flags)
        }

        fn pwrite(
            &self,
            src: &$crate::WriteBuf,
            count: u32,
            offset: u64,
            flags: $crate::CmdFlags,
        ) -> $crate::Result<()> {
            self.$value.pwrite($(&self.$next,)? src, count, offset, flags)
        }

        fn flush(&self, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$value.flush($(&self.$next,)? flags)
        }

        fn trim(&self, count: u64, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$value.trim($(&self.$next,)? count, offset, flags)
        }

        fn zero(&self, count: u64, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$value.zero($(&self.$next,)? count, offset, flags)
        }

        fn extents(&self, count: u64, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<Vec<$crate::Extent>> {
            self.$value.extents($(&self.$next,)? count, offset, flags)
        }

        fn cache(&self, count: u64, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$value.cache($(&self.$next,)? count, offset, flags)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn describe_spells_kinds_as_the_wit_does() {
        const KEYS: &[Key] = &[
            Key::new("size", Kind::Size, "s"),
            Key::new("on", Kind::Bool, "b"),
            Key::new("f", Kind::File, "f"),
            Key::new("d", Kind::Directory, "d"),
            Key::new("t", Kind::Text, "t"),
        ];
        let meta = Meta {
            name: "t",
            description: "d",
            magic_config_key: Some("size"),
            config_keys: KEYS,
            thread_model: ThreadModel::SerializeRequests,
            shared_state: true,
        };
        let info = meta.describe("1.2.3");
        let kinds: Vec<_> = info.config_keys.iter().map(|k| k.kind.as_str()).collect();
        assert_eq!(kinds, ["size", "bool", "file", "directory", "text"]);
        assert_eq!(
            (info.version.as_str(), info.magic_config_key.as_deref()),
            ("1.2.3", Some("size"))
        );
        assert!(meta.declares("on") && !meta.declares("off"));
    }

    #[test]
    fn the_layer_value_is_made_once() {
        with_mut(|n: &mut u32| *n += 1);
        with_mut(|n: &mut u32| *n += 1);
        assert_eq!(with(|n: &u32| *n), 2);
    }
}
