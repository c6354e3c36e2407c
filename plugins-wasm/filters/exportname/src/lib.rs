//! exportname: change the export names a client is offered and may use (nbdkit's
//! filters/exportname/exportname.c). `default-export=NAME` is what "" stands for;
//! `exportname-list=keep|error|empty|defaultonly|explicit` what NBD_OPT_LIST answers;
//! `exportname=NAME` (repeatable) the explicit list; `exportname-strict=true` refuses names
//! not in it; `exportdesc=keep|none|fixed:STRING` the descriptions. nbdkit's
//! `exportdesc=script:SCRIPT` runs a shell command, which a sandboxed component cannot do:
//! it is refused with a message saying so.
//!
//! State: none beyond the settings.

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{log_error, parse_bool};

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ListMode {
    #[default]
    Keep,
    Error,
    Empty,
    DefaultOnly,
    Explicit,
}

#[derive(Default, Clone, PartialEq, Eq)]
enum Description {
    #[default]
    Keep,
    None,
    Fixed(String),
}

#[derive(Default)]
struct Exportname {
    default_export: Option<String>,
    list: ListMode,
    strict: bool,
    names: Vec<String>,
    description: Description,
}

impl Description {
    /// The description to give for an export the layer below describes as `theirs`.
    fn apply(&self, theirs: Option<String>) -> Option<String> {
        match self {
            Description::Keep => theirs,
            Description::None => None,
            Description::Fixed(text) => Some(text.clone()),
        }
    }
}

impl Filter for Exportname {
    const NAME: &'static str = "exportname";
    const DESCRIPTION: &'static str = "nbdkit exportname filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "default-export",
            Kind::Text,
            "Canonical name for the \"\" default export",
        ),
        Key::new(
            "exportname-list",
            Kind::Text,
            "Which exports to advertise: keep (default), error, empty, defaultonly, explicit",
        ),
        Key::new(
            "exportname-strict",
            Kind::Bool,
            "Limit clients to explicit export names",
        ),
        Key::new("exportname", Kind::Text, "Add an explicit export name, may be repeated"),
        Key::new(
            "exportdesc",
            Kind::Text,
            "Set descriptions: keep (default), none, fixed:STRING",
        ),
    ];
    type Connection = ExportnameConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "default-export" => self.default_export = (!value.is_empty()).then(|| value.to_owned()),
            "exportname-list" => {
                self.list = match value {
                    "keep" => ListMode::Keep,
                    "error" => ListMode::Error,
                    "empty" => ListMode::Empty,
                    "defaultonly" => ListMode::DefaultOnly,
                    "explicit" => ListMode::Explicit,
                    _ => {
                        return Err(error(
                            Errno::Einval,
                            format!("unrecognized exportname-list mode: {value}"),
                        ))
                    }
                }
            }
            "exportname-strict" => self.strict = parse_bool(key, value)?,
            "exportname" => self.names.push(value.to_owned()),
            _ => {
                self.description = match value {
                    "keep" => Description::Keep,
                    "none" => Description::None,
                    _ if value.starts_with("fixed:") => Description::Fixed(value["fixed:".len()..].to_owned()),
                    _ if value.starts_with("script:") => {
                        return Err(error(
                            Errno::Einval,
                            "exportdesc=script: runs a shell command, which a sandboxed filter cannot do",
                        ))
                    }
                    _ => return Err(error(Errno::Einval, format!("unrecognized exportdesc format: {value}"))),
                }
            }
        }
        Ok(())
    }

    fn default_export(&self, readonly: bool) -> Option<String> {
        self.default_export.clone().or_else(|| next::default_export(readonly))
    }

    fn list_exports(&self, readonly: bool) -> Result<Vec<Export>> {
        let exports = match self.list {
            ListMode::Keep => next::list_exports(readonly)?,
            ListMode::Error => return Err(error(Errno::Eperm, "exportname: listing exports is refused")),
            ListMode::Empty => Vec::new(),
            ListMode::DefaultOnly => vec![Export {
                name: self.default_export(readonly).unwrap_or_default(),
                description: None,
            }],
            ListMode::Explicit => self
                .names
                .iter()
                .map(|name| Export {
                    name: name.clone(),
                    description: None,
                })
                .collect(),
        };
        Ok(exports
            .into_iter()
            .map(|e| Export {
                description: self.description.apply(e.description),
                ..e
            })
            .collect())
    }

    fn open(&self, _next: &Next, _readonly: bool, export_name: &str) -> Result<ExportnameConnection> {
        if self.strict && !self.names.iter().any(|n| n == export_name) {
            log_error(&format!("export '{export_name}' not found"));
            return Err(error(Errno::Enoent, format!("export '{export_name}' not found")));
        }
        Ok(ExportnameConnection {
            description: self.description.clone(),
        })
    }
}

struct ExportnameConnection {
    description: Description,
}

impl FilterConnection for ExportnameConnection {
    fn export_description(&self, next: &Next) -> Option<String> {
        self.description.apply(next.export_description())
    }
}

nbdbox_filter_sdk::filter!(Exportname);
