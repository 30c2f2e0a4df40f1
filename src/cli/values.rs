//! Parses a setting's raw text (from a flag or an environment variable) into the TOML values it
//! writes over the config file.
//!
//! ```text
//!   --kafka debug=cgrp,topic  ──► [Patch { path: ["debug"], value: "cgrp,topic" }]
//!   KSTAGE_KAFKA=a=1,b=2      ──► [Patch { path: ["a"], value: "1" },
//!                                  Patch { path: ["b"], value: "2" }]
//!   --format '*=bytes:json'   ──► [Patch { path: ["default_format"], value: {key, value} }]
//!   --commit-interval 250ms   ──► [Patch { path: [], value: "250ms" }]
//! ```
//!
//! Invariants:
//! - Every value is checked here, while clap still knows which flag or variable it came from, so a
//!   bad value exits 2 with an error naming the flag and what would be valid; the values written
//!   are exactly what the config's serde types accept (enum names are their serde names, durations
//!   are humantime text, numbers are TOML integers).
//! - Only environment variables of repeatable settings are split on commas. A flag's value never
//!   is: repeat the flag instead, so `--kafka debug=cgrp,topic` keeps its comma.

use std::ffi::OsStr;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::parser::ValueSource;
use toml::Value;

use super::settings::Kind;
use crate::codec::Format;

/// One value written over the config file: `value` at `path` below the setting's key.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Patch {
    /// The table names below the setting's key (an entry's name); empty for a plain value.
    pub path: Vec<String>,
    /// The TOML value.
    pub value: Value,
}

impl Patch {
    fn at_key(value: Value) -> Self {
        Self {
            path: Vec::new(),
            value,
        }
    }
}

/// The clap value parser of a setting of kind `kind`: each occurrence yields its patches.
#[derive(Debug, Clone)]
pub(super) struct SettingParser {
    kind: Kind,
}

impl SettingParser {
    /// The parser for values of `kind`.
    pub(super) fn new(kind: Kind) -> Self {
        Self { kind }
    }

    /// Parses one value (one flag occurrence, or one comma-separated piece of a variable).
    fn parse_one(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        raw: &OsStr,
    ) -> Result<Patch, clap::Error> {
        // Plain functions go through clap's own parser so errors read
        // "invalid value 'X' for '--flag <V>': <reason>" like every other flag's.
        let with = |parse: fn(&str) -> Result<Patch, String>| parse.parse_ref(cmd, arg, raw);
        match self.kind {
            Kind::Text | Kind::File | Kind::List => with(|raw| Ok(text(raw))),
            Kind::Bool => clap::builder::BoolValueParser::new()
                .parse_ref(cmd, arg, raw)
                .map(|b| Patch::at_key(Value::Boolean(b))),
            Kind::Count => with(count),
            Kind::Duration => with(duration),
            Kind::Choice(values) => PossibleValuesParser::new(values())
                .parse_ref(cmd, arg, raw)
                .map(|name| Patch::at_key(Value::String(name))),
            Kind::Entries => with(entry),
            Kind::Formats => with(topic_format),
        }
    }
}

impl TypedValueParser for SettingParser {
    type Value = Vec<Patch>;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        self.parse_one(cmd, arg, value).map(|patch| vec![patch])
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<Self::Value, clap::Error> {
        if source != ValueSource::EnvVariable || !self.kind.is_repeated() {
            return self.parse_ref(cmd, arg, value);
        }
        // A variable cannot repeat like a flag: it holds a comma-separated list.
        let Some(list) = value.to_str() else {
            // Not UTF-8: let the parser report it as it would for a flag.
            return self.parse_ref(cmd, arg, value);
        };
        list.split(',')
            .map(|piece| self.parse_one(cmd, arg, OsStr::new(piece)))
            .collect()
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        match self.kind {
            Kind::Choice(values) => Some(Box::new(values().into_iter())),
            Kind::Bool => Some(Box::new(
                ["true", "false"].into_iter().map(PossibleValue::new),
            )),
            _ => None,
        }
    }
}

fn text(raw: &str) -> Patch {
    Patch::at_key(Value::String(raw.to_string()))
}

fn count(raw: &str) -> Result<Patch, String> {
    let n: usize = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not a whole number ({e})"))?;
    i64::try_from(n)
        .map(|n| Patch::at_key(Value::Integer(n)))
        .map_err(|_| format!("{raw:?} is too large"))
}

/// A humantime duration, kept as text: the config's `humantime_serde` fields read it.
fn duration(raw: &str) -> Result<Patch, String> {
    parse_duration(raw).map(|_| text(raw))
}

/// A humantime duration (`100ms`, `5s`, `2m`); the error says what to write instead.
pub(super) fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write e.g. 100ms, 5s, 2m"))
}

fn entry(raw: &str) -> Result<Patch, String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok(Patch {
            path: vec![key.trim().to_string()],
            value: Value::String(value.to_string()),
        }),
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}

fn topic_format(raw: &str) -> Result<Patch, String> {
    let (topic, formats) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not TOPIC=KEY:VALUE (e.g. orders=string:avro)"))?;
    let (key, value) = formats
        .split_once(':')
        .ok_or_else(|| format!("{formats:?} is not KEY:VALUE (e.g. string:avro)"))?;
    let mut table = toml::Table::new();
    for (part, raw) in [("key", key), ("value", value)] {
        Format::parse(raw)?;
        table.insert(part.to_string(), Value::String(raw.to_string()));
    }
    let path = match topic {
        "*" => vec!["default_format".to_string()],
        topic => vec!["formats".to_string(), topic.to_string()],
    };
    Ok(Patch {
        path,
        value: Value::Table(table),
    })
}
