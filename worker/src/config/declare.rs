//! One declaration per setting: the [`declare_settings!`] macro turns each into the field of
//! [`Settings`] with its doc comment and default, its line in the redacted `Debug`, its entry in
//! [`FIELDS`] (TOML key, environment variable, how to parse it), its `celeriac worker` flag, and
//! its row of the worker README's Configuration table ([`docs_table`]).
//!
//! How a value is redacted follows from its type ([`SettingType`]): URLs show without their
//! password, passwords and transport options are never echoed, and plain text is masked where it
//! looks like a credential. The type also decides whether a value keeps the `<NAME>_FILE` it was
//! read from (URLs do, to re-read rotated credentials).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::redact::redacted_json;
use super::settings::{Settings, WorkerArgs, FIELDS};
use super::types::{
    DeadLetterPolicy, LogFormat, LogLevel, Password, RateLimit, RateLimitScope, SecretUrl,
    SerializerName,
};
use super::value::{Raw, Secrecy};
use super::ConfigError;

/// One setting celeriac honours, as declared in [`declare_settings!`].
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "the docs fields are read by docs_table")
)]
pub(crate) struct Field {
    /// The TOML key: Celery's setting name, or the key under `[celeriac]` for celeriac-only ones.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// Whether it lives under `[celeriac]` in TOML.
    pub celeriac: bool,
    /// How much of a bad value errors may show (from the setting's type).
    pub secrecy: Secrecy,
    /// The `celeriac worker` flag that sets it, if any.
    pub flag: Option<Flag>,
    /// The default as the README shows it.
    pub default_shown: &'static str,
    /// What it does: the lines of its doc comment.
    pub doc: &'static [&'static str],
    /// Parses the value and stores it.
    pub apply: fn(&mut Settings, Raw) -> Result<(), String>,
    /// Records the `<NAME>_FILE` the value was read from (see [`SettingType::read_from`]).
    pub read_from: fn(&mut Settings, PathBuf),
}

/// A `celeriac worker` flag that sets a setting.
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "the docs fields are read by docs_table")
)]
pub(crate) struct Flag {
    /// The one-letter form, if any.
    pub short: Option<char>,
    /// The long form, without `--`.
    pub long: &'static str,
    /// The placeholder of its value in `--help`; `None` for a switch.
    pub value_name: Option<&'static str>,
    /// The flag's value in `args` as setting text, when it was given.
    pub given: fn(&WorkerArgs) -> Option<String>,
}

/// Declares [`Settings`], its `Default` and redacted `Debug`, [`FIELDS`] and [`WorkerArgs`]
/// from one entry per setting:
///
/// ```text
/// /// What it does (doc comment of the field and the README's Meaning column).
/// celery broker_url: SecretUrl = <default>, "<default as the README shows it>",
///     env "CELERY_BROKER_URL",
///     flag broker: Option<String> = short 'b', long "broker", value_name "URL"; "<--help text>",
///     parse <fn(Raw) -> Result<SecretUrl, String>>;
/// ```
///
/// `celery` settings are top-level TOML keys, `celeriac` ones live under `[celeriac]`. The
/// `flag` clause is optional; a flag's field is `Option<String>`, `bool` (a switch) or
/// `Vec<String>` (with `delimiter ','`). `parse …, marks <field>` also sets the bool field
/// `<field>` when the setting is given. Fields that no source sets directly come first, in
/// `internal { … }`; the flags that set no setting come after `config`, in `flags { … }`.
macro_rules! declare_settings {
    (
        $(#[$settings_meta:meta])*
        pub struct $settings:ident {
            internal {
                $(
                    $(#[$internal_meta:meta])*
                    $internal:ident: $internal_ty:ty = $internal_default:expr;
                )*
            }
            $(
                $(#[doc = $doc:literal])*
                $section:ident $name:ident: $ty:ty = $default:expr, $shown:literal,
                    env $env:literal,
                    $(flag $flag:ident: $flag_ty:ty =
                        $(short $short:literal,)? long $long:literal
                        $(, value_name $value_name:literal)? $(, delimiter $delimiter:literal)?;
                        $flag_help:literal,)?
                    parse $parse:expr $(, marks $mark:ident)?;
            )*
        }
        $(#[$args_meta:meta])*
        pub struct $args:ident {
            $(#[$config_meta:meta])*
            pub config: $config_ty:ty,
            flags {
                $(
                    $(#[$other_meta:meta])*
                    pub $other:ident: $other_ty:ty,
                )*
            }
        }
    ) => {
        $(#[$settings_meta])*
        #[derive(Clone)]
        pub struct $settings {
            $(
                #[doc = concat!("`", stringify!($name), "` (`", $env, "`; default ", $shown, "): ")]
                $(#[doc = $doc])*
                pub $name: $ty,
            )*
            $(
                $(#[$internal_meta])*
                pub $internal: $internal_ty,
            )*
        }

        impl Default for $settings {
            /// Celery's defaults (celeriac's for its own settings). `worker_hostname` holds the
            /// unexpanded template here; [`Settings::load`](crate::config::Settings::load)
            /// expands it.
            fn default() -> Self {
                Self {
                    $($name: $default,)*
                    $($internal: $internal_default,)*
                }
            }
        }

        impl std::fmt::Debug for $settings {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($settings))
                    $(.field(stringify!($name), &$crate::config::declare::Redacted(&self.$name)))*
                    $(.field(stringify!($internal), &$crate::config::declare::Redacted(&self.$internal)))*
                    .finish()
            }
        }

        /// Every setting, in the order of the README table.
        pub(crate) static FIELDS: &[$crate::config::declare::Field] = &[
            $(
                $crate::config::declare::Field {
                    key: stringify!($name),
                    env: $env,
                    celeriac: declare_settings!(@celeriac $section),
                    secrecy: <$ty as $crate::config::declare::SettingType>::SECRECY,
                    flag: declare_settings!(@flag $args $(
                        $flag, $($short)?, $long, $($value_name)?
                    )?),
                    default_shown: $shown,
                    doc: &[$($doc),*],
                    apply: |settings, raw| {
                        let parse: fn($crate::config::value::Raw) -> Result<$ty, String> = $parse;
                        settings.$name = parse(raw)?;
                        $(settings.$mark = true;)?
                        Ok(())
                    },
                    read_from: |settings, file| {
                        $crate::config::declare::SettingType::read_from(&mut settings.$name, file)
                    },
                },
            )*
        ];

        $(#[$args_meta])*
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct $args {
            $(#[$config_meta])*
            pub config: $config_ty,
            $($(
                #[doc = $flag_help]
                #[arg($(short = $short,)? long = $long $(, value_name = $value_name)?
                    $(, value_delimiter = $delimiter)?)]
                pub $flag: $flag_ty,
            )?)*
            $(
                $(#[$other_meta])*
                pub $other: $other_ty,
            )*
        }
    };
    (@celeriac celery) => { false };
    (@celeriac celeriac) => { true };
    (@flag $args:ident) => { None };
    (@flag $args:ident $flag:ident, $($short:literal)?, $long:literal, $($value_name:literal)?) => {
        Some($crate::config::declare::Flag {
            short: declare_settings!(@option $($short)?),
            long: $long,
            value_name: declare_settings!(@option $($value_name)?),
            given: |args: &$args| $crate::config::declare::FlagValue::given(&args.$flag),
        })
    };
    (@option) => { None };
    (@option $value:literal) => { Some($value) };
}

pub(crate) use declare_settings;

/// A flag's field in [`WorkerArgs`]: the setting text it gives, if it was given.
pub(crate) trait FlagValue {
    /// The value as the environment would spell it; `None` when the flag was not given.
    fn given(&self) -> Option<String>;
}

impl FlagValue for Option<String> {
    fn given(&self) -> Option<String> {
        self.clone()
    }
}

impl FlagValue for bool {
    fn given(&self) -> Option<String> {
        self.then(|| "true".to_owned())
    }
}

impl FlagValue for Vec<String> {
    fn given(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(","))
    }
}

/// What a setting's type brings to its declaration: its secrecy in errors, its redacted form in
/// `Debug`, and whether it keeps the file it was read from.
pub(crate) trait SettingType {
    /// How much of a bad value errors may show.
    const SECRECY: Secrecy = Secrecy::Plain;
    /// Writes the value for `Settings`' `Debug`, secrets hidden.
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// Records the `<NAME>_FILE` the value was read from; only URLs keep it.
    fn read_from(&mut self, _file: PathBuf) {}
}

/// Shows a setting's value through [`SettingType`].
pub(crate) struct Redacted<'a, T>(pub &'a T);

impl<T: SettingType> fmt::Debug for Redacted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.show(f)
    }
}

/// Types whose own `Debug` holds nothing secret, or hides it already.
macro_rules! shown_as_debug {
    ($($ty:ty $(= $secrecy:ident)?),* $(,)?) => {$(
        impl SettingType for $ty {
            $(const SECRECY: Secrecy = Secrecy::$secrecy;)?
            fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}

shown_as_debug!(
    bool,
    u32,
    u64,
    usize,
    u16,
    Duration,
    LogLevel,
    LogFormat,
    DeadLetterPolicy,
    RateLimit,
    SerializerName,
    celeriac_broker_bridge::signing::Digest,
    RateLimitScope,
    Password = Hidden,
);

impl<T: SettingType> SettingType for Option<T> {
    const SECRECY: Secrecy = T::SECRECY;
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_ref().map(Redacted), f)
    }
    fn read_from(&mut self, file: PathBuf) {
        if let Some(value) = self {
            value.read_from(file);
        }
    }
}

impl SettingType for SecretUrl {
    const SECRECY: Secrecy = Secrecy::Url;
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
    fn read_from(&mut self, file: PathBuf) {
        self.set_file(file);
    }
}

impl SettingType for String {
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&shown(self), f)
    }
}

impl SettingType for PathBuf {
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&shown(&self.to_string_lossy()), f)
    }
}

impl SettingType for Vec<String> {
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(Redacted)).finish()
    }
}

impl SettingType for serde_json::Map<String, serde_json::Value> {
    const SECRECY: Secrecy = Secrecy::Hidden;
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = serde_json::Value::Object(self.clone());
        fmt::Debug::fmt(&redacted_json(&value).to_string(), f)
    }
}

/// The other TOML tables: only their names are shown.
impl SettingType for BTreeMap<String, toml::Value> {
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys().map(Redacted)).finish()
    }
}

/// A plain setting's value for `Debug`: a password pasted into it by mistake (a URL, or
/// `user:password@host` without a scheme) is masked as in config errors; anything else shows as
/// it is (a node name keeps its `@`).
fn shown(value: &str) -> String {
    let credential_like = value.rfind('@').is_some_and(|at| value[..at].contains(':'));
    if credential_like {
        celeriac_secrets::hide_userinfo(value)
    } else {
        celeriac_secrets::redact(value)
    }
}

/// The field with this TOML key in the given section (`celeriac = true` for `[celeriac]`).
pub(crate) fn by_key(key: &str, celeriac: bool) -> Option<&'static Field> {
    FIELDS
        .iter()
        .find(|f| f.key == key && f.celeriac == celeriac)
}

/// Applies `raw` to `settings`, turning a parse failure into an error that names `origin`.
pub(crate) fn apply(
    field: &Field,
    settings: &mut Settings,
    raw: Raw,
    origin: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    (field.apply)(settings, raw).map_err(|reason| ConfigError::InvalidValue {
        origin: origin(),
        value: raw.describe(field.secrecy),
        reason: redact_reason(field.secrecy, reason),
    })
}

/// Parse errors of URL settings may quote the URL: redact them too.
fn redact_reason(secrecy: Secrecy, reason: String) -> String {
    match secrecy {
        Secrecy::Plain => reason,
        Secrecy::Url => celeriac_secrets::hide_userinfo(&reason),
        Secrecy::Hidden => celeriac_secrets::redact(&reason),
    }
}

/// The worker README's settings table (Markdown), generated from [`FIELDS`]; a test keeps the
/// README's copy equal to it.
#[cfg(test)]
pub(crate) fn docs_table() -> String {
    let mut out = String::from(
        "| Celery name | Environment variable | TOML key | CLI flag | Default | Meaning |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for field in FIELDS {
        let (name, toml) = if field.celeriac {
            (
                "— (celeriac)".to_owned(),
                format!("`[celeriac] {}`", field.key),
            )
        } else {
            (format!("`{}`", field.key), format!("`{}`", field.key))
        };
        let flag = field.flag.as_ref().map_or("—".to_owned(), |flag| {
            let long = match flag.value_name {
                Some(value) => format!("`--{} {value}`", flag.long),
                None => format!("`--{}`", flag.long),
            };
            match flag.short {
                Some(short) => format!("`-{short}`, {long}"),
                None => long,
            }
        });
        let meaning: Vec<&str> = field.doc.iter().map(|line| line.trim()).collect();
        out.push_str(&format!(
            "| {name} | `{}` | {toml} | {flag} | {} | {} |\n",
            field.env,
            field.default_shown,
            meaning.join(" ")
        ));
    }
    out.push_str(&format!(
        "| — (celeriac) | `{}` | — | `--config FILE` | none | The TOML file. |\n",
        super::CONFIG_ENV
    ));
    out
}
