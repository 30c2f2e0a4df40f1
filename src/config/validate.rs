//! Cross-field checks of a [`StageConfig`], each with the key it concerns and what would be valid.

use std::fmt;

use super::{DeliveryMode, StageConfig};
use crate::topology::{Registry, Topology, TopologyParams, DEFAULT_OUTPUT};

/// librdkafka settings a stage sets itself, because exactly-once (or the stage's identity) depends
/// on them. Giving one in `kafka`, `consumer` or `producer` is a config error naming the field to
/// use instead.
pub const RESERVED_KAFKA_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "set bootstrap_servers instead"),
    ("group.id", "the consumer group is app_id"),
    (
        "transactional.id",
        "the transactional id is <app_id>-<instance_id>",
    ),
    (
        "enable.auto.commit",
        "the stage commits offsets itself (in the transaction)",
    ),
    (
        "enable.auto.offset.store",
        "the stage sends the consumer's positions itself",
    ),
    ("isolation.level", "a stage always reads read_committed"),
    (
        "enable.idempotence",
        "the transactional producer is always idempotent",
    ),
    ("transaction.timeout.ms", "set transaction_timeout instead"),
];

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key the problem concerns, as written in the config file (`kafka.group.id`, say).
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem, saying which file it is in.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        Self {
            message: format!("{} (in {})", self.message, path.display()),
            ..self
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl StageConfig {
    /// Checks the configuration and builds one topology instance per worker.
    pub fn topologies(&self, registry: &Registry) -> Result<Vec<Box<dyn Topology>>, ConfigErrors> {
        let first = self.validate(registry)?;
        let mut topologies = vec![first];
        while topologies.len() < self.workers {
            let topology = registry
                .get(&self.topology)
                .map(|info| (info.factory)(&TopologyParams::new(self.params.clone())))
                .and_then(Result::ok)
                .ok_or_else(|| ConfigError::new("topology", "cannot build another instance"))?;
            topologies.push(topology);
        }
        Ok(topologies)
    }

    /// Checks the configuration against itself and against the registered topologies, and builds
    /// the topology (which checks its parameters). Returns the topology ready to run, or every
    /// problem found.
    pub fn validate(&self, registry: &Registry) -> Result<Box<dyn Topology>, ConfigErrors> {
        let mut errors = self.static_errors();
        let topology = self.build_topology(registry, &mut errors);
        if let Some(topology) = &topology {
            self.check_outputs(topology.as_ref(), &mut errors);
            self.check_state(topology.as_ref(), &mut errors);
        }
        match topology {
            Some(topology) if errors.is_empty() => Ok(topology),
            _ => Err(ConfigErrors(errors)),
        }
    }

    fn build_topology(
        &self,
        registry: &Registry,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Box<dyn Topology>> {
        if self.topology.is_empty() {
            errors.push(ConfigError::new(
                "topology",
                format!("missing; one of: {}", registry.names()),
            ));
            return None;
        }
        let Some(info) = registry.get(&self.topology) else {
            errors.push(ConfigError::new(
                "topology",
                format!(
                    "{:?} is not registered; one of: {}",
                    self.topology,
                    registry.names()
                ),
            ));
            return None;
        };
        match (info.factory)(&TopologyParams::new(self.params.clone())) {
            Ok(topology) => Some(topology),
            Err(message) => {
                let (key, message) = match message.split_once(": ") {
                    Some((key, rest)) if key.starts_with("params") => (key.to_string(), rest),
                    _ => ("params".to_string(), message.as_str()),
                };
                errors.push(ConfigError::new(key, message));
                None
            }
        }
    }

    fn check_outputs(&self, topology: &dyn Topology, errors: &mut Vec<ConfigError>) {
        let mut declared: Vec<&str> = topology.outputs().to_vec();
        if topology.uses_default_output() {
            declared.push(DEFAULT_OUTPUT);
        }
        for name in &declared {
            if !self.outputs.contains_key(*name) {
                let how = if *name == DEFAULT_OUTPUT {
                    "--output TOPIC".to_string()
                } else {
                    format!("--route {name}=TOPIC")
                };
                errors.push(ConfigError::new(
                    format!("outputs.{name}"),
                    format!(
                        "topology {:?} writes to output {name:?}, which has no topic; set it ({how})",
                        self.topology
                    ),
                ));
            }
        }
        for name in self.outputs.keys() {
            if !declared.contains(&name.as_str()) {
                errors.push(ConfigError::new(
                    format!("outputs.{name}"),
                    format!(
                        "topology {:?} has no output {name:?}; its outputs are: {}",
                        self.topology,
                        declared.join(", ")
                    ),
                ));
            }
        }
    }

    /// A stateful topology runs exactly_once, without pipelined commits, on one input topic
    /// (changelog partition p holds the state of input partition p).
    fn check_state(&self, topology: &dyn Topology, errors: &mut Vec<ConfigError>) {
        let stores = topology.stores();
        if stores.is_empty() {
            return;
        }
        let names: Vec<&str> = stores.iter().map(|s| s.name).collect();
        if self.delivery != DeliveryMode::ExactlyOnce {
            errors.push(ConfigError::new(
                "delivery",
                format!(
                    "topology {:?} keeps state (stores: {}), which is exactly-once only in \
                     delivery = \"exactly_once\"; set it so",
                    self.topology,
                    names.join(", ")
                ),
            ));
        }
        if self.pipelined_commits {
            errors.push(ConfigError::new(
                "pipelined_commits",
                format!(
                    "topology {:?} keeps state; stateful stages commit without pipelining: set \
                     it to false or remove it",
                    self.topology
                ),
            ));
        }
        if self.inputs.len() > 1 {
            errors.push(ConfigError::new(
                "inputs",
                format!(
                    "topology {:?} keeps state per input partition, so it reads exactly one \
                     input topic, not {}",
                    self.topology,
                    self.inputs.len()
                ),
            ));
        }
        for name in names {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid {
                errors.push(ConfigError::new(
                    "topology",
                    format!("store name {name:?} must be lowercase letters, digits, - and _"),
                ));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            errors.push(ConfigError::new(
                "state_dir",
                "must not be empty (default: kstage-state)",
            ));
        }
    }

    /// The checks that need no topology.
    pub(crate) fn static_errors(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut require = |key: &str, value: &str, what: &str| {
            if value.trim().is_empty() {
                errors.push(ConfigError::new(key, format!("missing; {what}")));
            }
        };
        require(
            "bootstrap_servers",
            &self.bootstrap_servers,
            "give host:port[,host:port...]",
        );
        require(
            "app_id",
            &self.app_id,
            "give the application id (the consumer group)",
        );
        require(
            "instance_id",
            &self.instance_id,
            "give this instance a stable id, distinct from the stage's other instances",
        );
        for (key, value) in [("app_id", &self.app_id), ("instance_id", &self.instance_id)] {
            if let Some(bad) = value.chars().find(|c| !is_id_char(*c)) {
                errors.push(ConfigError::new(
                    key,
                    format!("{value:?} contains {bad:?}; use letters, digits, '.', '_' and '-'"),
                ));
            }
        }
        if self.inputs.is_empty() {
            errors.push(ConfigError::new(
                "inputs",
                "missing; give at least one input topic",
            ));
        }
        for topic in self.inputs.iter().chain(self.outputs.values()) {
            if let Err(message) = check_topic_name(topic) {
                errors.push(ConfigError::new("inputs", message));
            }
        }
        for (name, topic) in &self.outputs {
            if self.inputs.contains(topic) {
                errors.push(ConfigError::new(
                    format!("outputs.{name}"),
                    format!("topic {topic:?} is also an input; a stage must not feed itself"),
                ));
            }
        }
        if !(1..=64).contains(&self.workers) {
            errors.push(ConfigError::new("workers", "must be from 1 to 64"));
        }
        if self.max_records_per_txn == 0 {
            errors.push(ConfigError::new(
                "max_records_per_txn",
                "must be at least 1",
            ));
        }
        if self.pipelined_commits && self.delivery != DeliveryMode::ExactlyOnce {
            errors.push(ConfigError::new(
                "pipelined_commits",
                "applies to delivery = \"exactly_once\" only; set it to false or remove it",
            ));
        }
        self.check_commit_policy(&mut errors);
        if self.commit_interval.is_zero() {
            errors.push(ConfigError::new(
                "commit_interval",
                "must be greater than 0 (e.g. 100ms)",
            ));
        }
        self.check_timeouts(&mut errors);
        self.check_kafka_maps(&mut errors);
        self.check_poison_policy(&mut errors);
        self.security.check(&mut errors);
        self.check_codecs(&mut errors);
        errors
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Kafka's own rule for topic names.
fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a topic name is empty".to_string());
    }
    if topic.len() > 249 {
        return Err(format!("topic {topic:?} is longer than 249 characters"));
    }
    if topic == "." || topic == ".." {
        return Err(format!("topic {topic:?} is not a valid name"));
    }
    match topic.chars().find(|c| !is_id_char(*c)) {
        Some(bad) => Err(format!(
            "topic {topic:?} contains {bad:?}; Kafka allows letters, digits, '.', '_' and '-'"
        )),
        None => Ok(()),
    }
}

#[path = "validate_fields.rs"]
mod fields;

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
