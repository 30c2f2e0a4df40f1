//! The registry that maps topology names to constructors, so a stage picks its topology by name
//! at run time (`kstage run --topology NAME`).

use std::collections::BTreeMap;
use std::str::FromStr;

use super::Topology;

/// Parameters handed to a topology's constructor: `[params]` in the config file, `--param
/// KEY=VALUE` on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyParams(BTreeMap<String, String>);

impl TopologyParams {
    /// Wraps a map of parameters.
    pub fn new(params: BTreeMap<String, String>) -> Self {
        Self(params)
    }

    /// A parameter as text, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parameter parsed into `T`, or `default` when absent. The error names the parameter,
    /// the bad value and what was expected.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T, expected: &str) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("params.{key}: {raw:?} is not valid; expected {expected}")),
        }
    }

    /// A required parameter as text.
    pub fn require(&self, key: &str, expected: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("params.{key}: missing; this topology needs {expected}"))
    }

    /// Fails when a parameter is given that the topology does not know (a typo would otherwise
    /// be ignored silently).
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), String> {
        match self.0.keys().find(|key| !known.contains(&key.as_str())) {
            None => Ok(()),
            Some(key) if known.is_empty() => Err(format!(
                "params.{key}: unknown parameter; this topology takes none"
            )),
            Some(key) => Err(format!(
                "params.{key}: unknown parameter; this topology takes: {}",
                known.join(", ")
            )),
        }
    }
}

/// Builds a topology from its parameters; the error says which parameter is wrong and why.
pub type TopologyFactory = fn(&TopologyParams) -> Result<Box<dyn Topology>, String>;

/// A registered topology.
#[derive(Debug, Clone, Copy)]
pub struct TopologyInfo {
    /// The name a stage selects it by.
    pub name: &'static str,
    /// One line saying what it does.
    pub description: &'static str,
    /// Its constructor.
    pub factory: TopologyFactory,
}

/// A registered sink topology (`kstage sink` with `[sink] topology = NAME`).
#[derive(Debug, Clone, Copy)]
pub struct SinkTopologyInfo {
    /// The name a sink selects it by.
    pub name: &'static str,
    /// One line saying what it does.
    pub description: &'static str,
    /// Its constructor.
    pub factory: crate::sink::topology::SinkTopologyFactory,
}

/// Topologies by name, and sink topologies by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<&'static str, TopologyInfo>,
    sinks: BTreeMap<&'static str, SinkTopologyInfo>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a topology; a second registration under the same name replaces the first.
    pub fn register(
        &mut self,
        name: &'static str,
        description: &'static str,
        factory: TopologyFactory,
    ) -> &mut Self {
        self.entries.insert(
            name,
            TopologyInfo {
                name,
                description,
                factory,
            },
        );
        self
    }

    /// Registers a sink topology; a second registration under the same name replaces the first.
    pub fn register_sink(
        &mut self,
        name: &'static str,
        description: &'static str,
        factory: crate::sink::topology::SinkTopologyFactory,
    ) -> &mut Self {
        self.sinks.insert(
            name,
            SinkTopologyInfo {
                name,
                description,
                factory,
            },
        );
        self
    }

    /// The sink topology registered under `name`.
    pub fn sink(&self, name: &str) -> Option<&SinkTopologyInfo> {
        self.sinks.get(name)
    }

    /// All registered sink topologies, by name.
    pub fn sinks(&self) -> impl Iterator<Item = &SinkTopologyInfo> {
        self.sinks.values()
    }

    /// The registered sink topology names, comma-separated, for error messages.
    pub fn sink_names(&self) -> String {
        self.sinks.keys().copied().collect::<Vec<_>>().join(", ")
    }

    /// The topology registered under `name`.
    pub fn get(&self, name: &str) -> Option<&TopologyInfo> {
        self.entries.get(name)
    }

    /// All registered topologies, by name.
    pub fn iter(&self) -> impl Iterator<Item = &TopologyInfo> {
        self.entries.values()
    }

    /// The registered names, comma-separated, for error messages.
    pub fn names(&self) -> String {
        self.entries.keys().copied().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> TopologyParams {
        TopologyParams::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parse_or_names_the_parameter_and_the_expected_form() {
        let p = params(&[("rate", "lots")]);
        let err = p
            .parse_or::<f64>("rate", 0.0, "a decimal number")
            .expect_err("bad");
        assert_eq!(
            err,
            "params.rate: \"lots\" is not valid; expected a decimal number"
        );
        assert_eq!(p.parse_or::<u32>("other", 3, "a count"), Ok(3));
    }

    #[test]
    fn deny_unknown_lists_what_is_known() {
        let p = params(&[("mraker", "x")]);
        let err = p.deny_unknown(&["marker"]).expect_err("typo");
        assert!(
            err.contains("params.mraker") && err.contains("marker"),
            "{err}"
        );
        assert!(params(&[]).deny_unknown(&[]).is_ok());
    }
}
