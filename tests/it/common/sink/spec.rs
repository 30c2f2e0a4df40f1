//! A `kstage sink` config for a test: the TOML of a sink from one input topic into one table,
//! edited key by key, and started as a [`Stage`] (the shared child-process helper, subcommand
//! `sink`), one process per instance id.

use crate::common::stage::{Stage, StageSpec};

/// How to start a sink: its config file's contents, plus environment.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// The TOML config (without instance_id, which each spawn passes as a flag).
    pub toml: String,
    pub env: Vec<(String, String)>,
}

impl SinkSpec {
    /// A sink of `input` into `table` in group `app_id`, `mode` and the `[sink.columns]` lines.
    /// A quick session timeout (6 s) so that a rebalance after a kill takes seconds.
    pub fn new(
        bootstrap: &str,
        input: &str,
        app_id: &str,
        url: &str,
        mode: &str,
        table: &str,
        columns: &str,
    ) -> Self {
        let toml = format!(
            "bootstrap_servers = \"{bootstrap}\"\ninputs = [\"{input}\"]\napp_id = \"{app_id}\"\n\
             commit_interval = \"50ms\"\nmax_records_per_txn = 2000\n\
             [kafka]\n\"session.timeout.ms\" = \"6000\"\n\
             [sink]\nurl = \"{url}\"\nmode = \"{mode}\"\ntable = \"{table}\"\nretry_timeout = \"90s\"\n\
             [sink.columns]\n{columns}\n"
        );
        Self {
            toml,
            env: Vec::new(),
        }
    }

    /// Sets top-level TOML lines (`key = value`, before the tables), replacing a line of the
    /// same key.
    pub fn top(mut self, lines: &str) -> Self {
        for line in lines.lines() {
            let key = line.split('=').next().unwrap_or_default().trim();
            let kept: Vec<&str> = self
                .toml
                .lines()
                .filter(|l| {
                    l.split('=').next().unwrap_or_default().trim() != key || l.starts_with('[')
                })
                .collect();
            self.toml = format!("{line}\n{}\n", kept.join("\n"));
        }
        self
    }

    /// Adds lines to the `[sink]` section.
    pub fn sink_lines(mut self, lines: &str) -> Self {
        self.toml = self.toml.replace("[sink]\n", &format!("[sink]\n{lines}\n"));
        self
    }

    /// Adds lines to the `[sink.columns]` section.
    pub fn column_lines(mut self, lines: &str) -> Self {
        self.toml = self
            .toml
            .replace("[sink.columns]\n", &format!("[sink.columns]\n{lines}\n"));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The stage spec of one instance of this sink.
    pub fn stage(&self, instance: &str) -> StageSpec {
        self.env.iter().fold(
            StageSpec::sink(&self.toml).instance(instance),
            |spec, (k, v)| spec.env(k, v),
        )
    }

    /// Starts instance `instance`.
    pub fn spawn(&self, instance: &str) -> Stage {
        self.stage(instance).spawn()
    }
}

impl SinkSpec {
    /// Appends TOML tables (e.g. `[formats."topic"]`, `[schema_registry]`) after the others.
    pub fn tables(mut self, toml: &str) -> Self {
        self.toml.push_str(toml);
        self.toml.push('\n');
        self
    }
}
