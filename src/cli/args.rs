//! Stage settings from flags and `KSTAGE_...` environment variables, layered over the config file.
//!
//! ```text
//!   --config FILE ─────────► toml::Table ──┐
//!   KSTAGE_... ─┐                          ├─► patches written  ──► StageConfig::from_table
//!   --flags ────┴─► clap, per SETTINGS ────┘   over the table        (one serde read)
//!                   (a flag wins over its variable)
//! ```
//!
//! [`StageArgs`] builds one clap argument per entry of [`SETTINGS`] (so each flag names its
//! variable in `--help`), and clap parses each value with [`SettingParser`], which checks it and
//! turns it into the TOML it writes. [`StageArgs::into_config`] writes those values over the config
//! file's table, tables merging into tables, and reads the result with [`StageConfig::from_table`]:
//! the config struct's serde types and defaults are the only ones, with nothing mirrored here.
//!
//! Invariants: a setting a flag or variable does not give keeps the file's value (or the
//! default); a list setting replaces the file's list, an entry setting adds to (or replaces one
//! entry of) the file's table; secrets never show in `--help` or in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use toml::{Table, Value};

use super::settings::{Kind, Setting, SETTINGS};
use super::values::{parse_duration, Patch, SettingParser};
use crate::codec::RegistryConfig;
use crate::config::{ConfigError, StageConfig, REDACTED};

/// The id of the `--config` argument.
const CONFIG: &str = "config";

/// Every stage setting given as a flag or an environment variable, and the config file they
/// override. Build it with clap (`#[command(flatten)]`); `SETTINGS` in `settings.rs` declares
/// the settings.
#[derive(Clone, Default)]
pub struct StageArgs {
    /// A TOML config file; flags and environment variables override it.
    pub config: Option<PathBuf>,
    /// What each setting given parsed into, by its index in [`SETTINGS`] (so in table order).
    given: BTreeMap<usize, Vec<Patch>>,
}

impl Args for StageArgs {
    fn augment_args(cmd: Command) -> Command {
        let defaults = shown_defaults();
        let config = Arg::new(CONFIG)
            .long(CONFIG)
            .short('c')
            .env("KSTAGE_CONFIG")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("A TOML config file; flags and environment variables override it");
        cmd.arg(config).args(
            SETTINGS
                .iter()
                .map(|setting| setting_arg(setting, &defaults)),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The clap argument of one setting.
fn setting_arg(setting: &Setting, defaults: &Table) -> Arg {
    // Like the derived flags, whose one-sentence docs lose their full stop.
    let mut help = setting.doc.trim_end_matches('.').to_string();
    if let Some(default) = shown_default(lookup(defaults, setting.path())) {
        help.push_str(&format!(" [default: {default}]"));
    }
    let value_name = match setting.placeholder() {
        Some(name) => name.to_string(),
        None => setting.flag.replace('-', "_").to_uppercase(),
    };
    let action = if setting.kind.is_repeated() {
        ArgAction::Append
    } else {
        ArgAction::Set
    };
    let arg = Arg::new(setting.flag)
        .long(setting.flag)
        .help(help)
        .value_name(value_name)
        .value_parser(SettingParser::new(setting.kind))
        .action(action);
    match setting.env {
        Some(env) => arg.env(env).hide_env_values(setting.secret),
        None => arg,
    }
}

/// The defaults `--help` shows, read from [`StageConfig::default`] (with a registry, so that its
/// settings show theirs too).
fn shown_defaults() -> Table {
    let config = StageConfig {
        schema_registry: Some(RegistryConfig::new("")),
        ..StageConfig::default()
    };
    Table::try_from(&config).unwrap_or_default()
}

/// A default worth showing: a scalar, not an empty string.
fn shown_default(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Integer(n) => Some(n.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The value at a path of table names.
fn lookup<'a, 'p>(table: &'a Table, mut path: impl Iterator<Item = &'p str>) -> Option<&'a Value> {
    let mut value = table.get(path.next()?)?;
    for name in path {
        value = value.as_table()?.get(name)?;
    }
    Some(value)
}

impl FromArgMatches for StageArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let internal = |e: clap::parser::MatchesError| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, e.to_string())
        };
        let config = matches
            .try_get_one::<PathBuf>(CONFIG)
            .map_err(internal)?
            .cloned();
        let mut given = BTreeMap::new();
        for (index, setting) in SETTINGS.iter().enumerate() {
            if let Some(values) = matches
                .try_get_many::<Vec<Patch>>(setting.flag)
                .map_err(internal)?
            {
                given.insert(index, values.flatten().cloned().collect());
            }
        }
        Ok(Self { config, given })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        let update = Self::from_arg_matches(matches)?;
        if update.config.is_some() {
            self.config = update.config;
        }
        self.given.extend(update.given);
        Ok(())
    }
}

impl StageArgs {
    /// The config file (if any) with the flags and environment variables written over it.
    pub fn into_config(self) -> Result<StageConfig, ConfigError> {
        let mut table = match &self.config {
            Some(path) => StageConfig::read_table(path)?,
            None => Table::new(),
        };
        for (&index, patches) in &self.given {
            if let Some(setting) = SETTINGS.get(index) {
                apply(setting, patches, &mut table);
            }
        }
        // The values given here were checked as clap parsed them, so a problem is the file's.
        let config = StageConfig::from_table(table);
        match &self.config {
            Some(path) => config.map_err(|e| e.in_file(path)),
            None => config,
        }
    }
}

/// Writes one setting's values over the config table.
fn apply(setting: &Setting, patches: &[Patch], table: &mut Table) {
    if setting
        .needs_section
        .is_some_and(|section| !table.contains_key(section))
    {
        return;
    }
    let key: Vec<&str> = setting.path().collect();
    if let Kind::List = setting.kind {
        let list = patches.iter().map(|patch| patch.value.clone()).collect();
        write(table, &key, Value::Array(list));
        return;
    }
    for patch in patches {
        let mut path = key.clone();
        path.extend(patch.path.iter().map(String::as_str));
        write(table, &path, patch.value.clone());
    }
}

/// Writes `value` at `path`: a table merges into a table there, anything else replaces what is
/// there. Where the file holds a non-table on the way, the value is dropped and the file's own
/// type error is reported when the table is read.
fn write(table: &mut Table, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        if let Value::Table(entries) = value {
            for (name, value) in entries {
                write(table, &[&name], value);
            }
        }
        return;
    };
    let mut table = table;
    for name in parents {
        let entry = table
            .entry(*name)
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(inner) => table = inner,
            _ => return,
        }
    }
    match (table.get_mut(*last), value) {
        (Some(Value::Table(existing)), Value::Table(entries)) => {
            for (name, value) in entries {
                write(existing, &[&name], value);
            }
        }
        (_, value) => {
            table.insert((*last).to_string(), value);
        }
    }
}

impl fmt::Debug for StageArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut given = f.debug_map();
        given.entry(&CONFIG, &self.config);
        for (&index, patches) in &self.given {
            let Some(setting) = SETTINGS.get(index) else {
                continue;
            };
            if setting.secret {
                given.entry(&setting.flag, &REDACTED);
            } else {
                given.entry(&setting.flag, patches);
            }
        }
        given.finish()
    }
}

/// Process-level knobs of `kstage run` (not part of the pipeline config).
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Address of the /metrics, /healthz and /readyz endpoint, or `off`.
    #[arg(long, env = "KSTAGE_METRICS_ADDRESS", default_value = "127.0.0.1:9464", value_parser = metrics_address)]
    pub metrics_address: MetricsAddress,
    /// /readyz fails once a transaction has been open longer than this.
    #[arg(long, env = "KSTAGE_READY_MAX_TRANSACTION_AGE", default_value = "60s", value_parser = parse_duration)]
    pub ready_max_transaction_age: Duration,
    /// How long SIGTERM may take to commit and leave the group before the process exits anyway.
    #[arg(long, env = "KSTAGE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Where the metrics and health endpoint listens; `None` when switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<SocketAddr>);

fn metrics_address(raw: &str) -> Result<MetricsAddress, String> {
    if raw == "off" {
        return Ok(MetricsAddress(None));
    }
    raw.parse()
        .map(|address| MetricsAddress(Some(address)))
        .map_err(|_| format!("{raw:?} is not ip:port (e.g. 0.0.0.0:9464) or `off`"))
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
