//! The stage settings a flag or a `KSTAGE_...` environment variable can give: one declaration per
//! setting, in [`SETTINGS`].
//!
//! A declaration names the TOML key the value lands on, the flag, the environment variable, the
//! kind of value (which picks the parser, the placeholder in `--help` and how repeats combine) and
//! the help line. Nothing else mirrors a setting: `args.rs` builds the clap arguments from this
//! table and writes what they parsed into the config file's TOML table, and [`StageConfig`]'s
//! serde `Deserialize` then reads that table once, so the default (a named function in
//! `src/config`, whose comment says where it comes from) and the type live only on the config
//! struct. `--help` shows each default, read back from [`StageConfig::default`], so it cannot
//! drift.
//!
//! Adding a setting: add its field to [`StageConfig`] (with its doc and default) and one entry
//! here. The tests in `args_tests.rs` prove every entry lands on a real key.
//!
//! [`StageConfig`]: crate::config::StageConfig
//! [`StageConfig::default`]: crate::config::StageConfig

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::codec::SubjectNameStrategy;
use crate::config::{CommitPolicy, DeliveryMode, PoisonPolicy, SaslMechanism, SecurityProtocol};

/// What a setting's value is, and so how it is parsed and how repeats combine.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// Any text, taken as it is.
    Text,
    /// A file path.
    File,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Count,
    /// A duration such as `100ms`, `5s`, `2m` (humantime).
    Duration,
    /// One of an enum's values, as written in the config file.
    Choice(fn() -> Vec<PossibleValue>),
    /// A list that replaces the file's: the flag repeats, the environment variable is
    /// comma-separated.
    List,
    /// `NAME=VALUE` entries added to the key's table (an entry of the same name is replaced):
    /// the flag repeats, the environment variable is comma-separated.
    Entries,
    /// `TOPIC=KEY:VALUE` codec formats; TOPIC `*` sets `default_format`, any other topic
    /// `formats.TOPIC` (keeping the file's `value_schema`). Repeats like [`Kind::Entries`].
    Formats,
}

impl Kind {
    /// Whether the flag may repeat (and the environment variable holds a comma-separated list).
    pub(super) fn is_repeated(self) -> bool {
        matches!(self, Self::List | Self::Entries | Self::Formats)
    }

    /// The placeholder `--help` shows when the declaration gives none.
    fn value_name(self) -> Option<&'static str> {
        match self {
            Self::Text | Self::Choice(_) | Self::List => None,
            Self::File => Some("FILE"),
            Self::Bool => Some("true|false"),
            Self::Count => Some("N"),
            Self::Duration => Some("DURATION"),
            Self::Entries => Some("KEY=VALUE"),
            Self::Formats => Some("TOPIC=KEY:VALUE"),
        }
    }
}

/// The values of a clap `ValueEnum`, with their docs; their names are the serde names.
fn choices<E: ValueEnum>() -> Vec<PossibleValue> {
    E::value_variants()
        .iter()
        .filter_map(ValueEnum::to_possible_value)
        .collect()
}

/// One stage setting.
#[derive(Debug, Clone, Copy)]
pub(super) struct Setting {
    /// The TOML key the value lands on, dotted for nested tables (`security.password`); empty
    /// for [`Kind::Formats`], whose values name their own keys.
    pub key: &'static str,
    /// The long flag, without the dashes.
    pub flag: &'static str,
    /// The environment variable, `KSTAGE_` and the flag in upper snake case.
    pub env: Option<&'static str>,
    /// What the value is.
    pub kind: Kind,
    /// The `--help` line.
    pub doc: &'static str,
    /// The placeholder in `--help`, when the kind's is not telling enough.
    value_name: Option<&'static str>,
    /// A secret: its environment variable's value never shows in `--help`, nor the value in
    /// `Debug` output.
    pub secret: bool,
    /// A table the setting only applies inside: without it (no such section in the file and no
    /// flag creating it) the value is ignored, since there is nothing to configure.
    pub needs_section: Option<&'static str>,
}

impl Setting {
    const fn new(key: &'static str, flag: &'static str, kind: Kind) -> Self {
        Self {
            key,
            flag,
            env: None,
            kind,
            doc: "",
            value_name: None,
            secret: false,
            needs_section: None,
        }
    }

    const fn env(self, env: &'static str) -> Self {
        Self {
            env: Some(env),
            ..self
        }
    }

    const fn doc(self, doc: &'static str) -> Self {
        Self { doc, ..self }
    }

    const fn secret(self) -> Self {
        Self {
            secret: true,
            ..self
        }
    }

    const fn value_name(self, name: &'static str) -> Self {
        Self {
            value_name: Some(name),
            ..self
        }
    }

    const fn needs_section(self, section: &'static str) -> Self {
        Self {
            needs_section: Some(section),
            ..self
        }
    }

    /// The placeholder `--help` shows, if not clap's default (the flag in upper case).
    pub(super) fn placeholder(&self) -> Option<&'static str> {
        self.value_name.or(self.kind.value_name())
    }

    /// The TOML key as a path of table names.
    pub(super) fn path(&self) -> impl Iterator<Item = &'static str> {
        self.key.split('.').filter(|part| !part.is_empty())
    }
}

// The table reads better without `Kind::` on every line.
use Kind::*;

const REGISTRY: &str = "schema_registry";

/// Every stage setting, in `--help` order. Flags win over environment variables, which win over
/// the config file.
pub(super) const SETTINGS: &[Setting] = &[
    Setting::new("topology", "topology", Text)
        .env("KSTAGE_TOPOLOGY")
        .doc("The topology to run (see `kstage topologies`)."),
    Setting::new("bootstrap_servers", "bootstrap-servers", Text)
        .env("KSTAGE_BOOTSTRAP_SERVERS")
        .value_name("HOST:PORT,...")
        .doc("Kafka bootstrap servers, host:port[,host:port...]."),
    Setting::new("inputs", "input", List)
        .env("KSTAGE_INPUT")
        .value_name("TOPIC")
        .doc("An input topic (repeat the flag for several)."),
    Setting::new("outputs.default", "output", Text)
        .env("KSTAGE_OUTPUT")
        .value_name("TOPIC")
        .doc("The topic of the topology's default output."),
    Setting::new("outputs", "route", Entries)
        .env("KSTAGE_ROUTE")
        .value_name("NAME=TOPIC")
        .doc("The topic of a named output, NAME=TOPIC (repeatable)."),
    Setting::new("app_id", "app-id", Text)
        .env("KSTAGE_APP_ID")
        .doc("The application id: consumer group and transactional id prefix."),
    Setting::new("instance_id", "instance-id", Text)
        .env("KSTAGE_INSTANCE_ID")
        .doc("This instance's stable id; the transactional id is <app-id>-<instance-id>."),
    Setting::new("delivery", "delivery", Choice(choices::<DeliveryMode>))
        .env("KSTAGE_DELIVERY")
        .doc("Delivery guarantee."),
    Setting::new("commit_interval", "commit-interval", Duration)
        .env("KSTAGE_COMMIT_INTERVAL")
        .doc("How long a transaction collects records before committing (e.g. 100ms)."),
    Setting::new("max_records_per_txn", "max-records-per-txn", Count)
        .env("KSTAGE_MAX_RECORDS_PER_TXN")
        .doc("Commit early once a transaction holds this many input records."),
    Setting::new(
        "commit_policy",
        "commit-policy",
        Choice(choices::<CommitPolicy>),
    )
    .env("KSTAGE_COMMIT_POLICY")
    .doc("When a transaction closes within commit_interval (see the README)."),
    Setting::new("target_latency", "target-latency", Duration)
        .env("KSTAGE_TARGET_LATENCY")
        .doc("commit_policy target_latency: how long a record may wait for its commit."),
    Setting::new("pipelined_commits", "pipelined-commits", Bool)
        .env("KSTAGE_PIPELINED_COMMITS")
        .doc(concat!(
            "exactly_once: commit on a commit thread while the worker goes on (see the ",
            "README)."
        )),
    Setting::new("static_membership", "static-membership", Bool)
        .env("KSTAGE_STATIC_MEMBERSHIP")
        .doc(concat!(
            "exactly_once: join the group as a static member (group.instance.id = the ",
            "transactional id); a restart within session.timeout.ms (10 s) keeps the partitions."
        )),
    Setting::new("transaction_timeout", "transaction-timeout", Duration)
        .env("KSTAGE_TRANSACTION_TIMEOUT")
        .doc("transaction.timeout.ms, as a duration (e.g. 60s)."),
    Setting::new("workers", "workers", Count)
        .env("KSTAGE_WORKERS")
        .doc("Workers (consumer + transactional producer pairs) in this instance."),
    Setting::new(
        "poison_policy",
        "poison-policy",
        Choice(choices::<PoisonPolicy>),
    )
    .env("KSTAGE_POISON_POLICY")
    .doc("What to do with a record that cannot be processed."),
    Setting::new("dead_letter_topic", "dead-letter-topic", Text)
        .env("KSTAGE_DEAD_LETTER_TOPIC")
        .value_name("TOPIC")
        .doc("Where poison_policy dead_letter writes records that cannot be processed."),
    Setting::new("provenance_headers", "provenance-headers", Bool)
        .env("KSTAGE_PROVENANCE_HEADERS")
        .doc("Whether outputs carry kstage.source.topic/partition/offset headers."),
    Setting::new("max_value_bytes", "max-value-bytes", Count)
        .env("KSTAGE_MAX_VALUE_BYTES")
        .doc("Input values above this many bytes are poison records."),
    Setting::new("", "format", Formats)
        .env("KSTAGE_FORMAT")
        .doc(concat!(
            "Key and value formats of a topic, TOPIC=KEY:VALUE with ",
            "bytes|string|json|avro (TOPIC `*` sets the default); repeatable."
        )),
    Setting::new("schema_registry.url", "schema-registry-url", Text)
        .env("KSTAGE_SCHEMA_REGISTRY_URL")
        .value_name("URL")
        .doc("Confluent-compatible schema registry URL (needed by avro formats)."),
    Setting::new("schema_registry.username", "schema-registry-username", Text)
        .env("KSTAGE_SCHEMA_REGISTRY_USERNAME")
        .needs_section(REGISTRY)
        .doc("Schema registry basic-auth user."),
    Setting::new("schema_registry.password", "schema-registry-password", Text)
        .env("KSTAGE_SCHEMA_REGISTRY_PASSWORD")
        .secret()
        .needs_section(REGISTRY)
        .doc("Schema registry basic-auth password (prefer the environment variable)."),
    Setting::new(
        "schema_registry.subject_name_strategy",
        "subject-name-strategy",
        Choice(choices::<SubjectNameStrategy>),
    )
    .env("KSTAGE_SUBJECT_NAME_STRATEGY")
    .needs_section(REGISTRY)
    .doc("How Avro output subjects are named."),
    Setting::new(
        "schema_registry.unavailable_timeout",
        "schema-registry-unavailable-timeout",
        Duration,
    )
    .env("KSTAGE_SCHEMA_REGISTRY_UNAVAILABLE_TIMEOUT")
    .needs_section(REGISTRY)
    .doc(concat!(
        "How long an unreachable schema registry is retried before the stage stops ",
        "(e.g. 30s)."
    )),
    Setting::new(
        "security.protocol",
        "security-protocol",
        Choice(choices::<SecurityProtocol>),
    )
    .env("KSTAGE_SECURITY_PROTOCOL")
    .doc("Kafka security protocol."),
    Setting::new(
        "security.sasl_mechanism",
        "sasl-mechanism",
        Choice(choices::<SaslMechanism>),
    )
    .env("KSTAGE_SASL_MECHANISM")
    .doc("SASL mechanism."),
    Setting::new("security.username", "sasl-username", Text)
        .env("KSTAGE_SASL_USERNAME")
        .doc("SASL user name."),
    Setting::new("security.password", "sasl-password", Text)
        .env("KSTAGE_SASL_PASSWORD")
        .secret()
        .doc("SASL password (prefer the environment variable)."),
    Setting::new("security.ca_location", "ssl-ca-location", File)
        .env("KSTAGE_SSL_CA_LOCATION")
        .doc("PEM file of the CA of the brokers' certificates."),
    Setting::new(
        "security.certificate_location",
        "ssl-certificate-location",
        File,
    )
    .env("KSTAGE_SSL_CERTIFICATE_LOCATION")
    .doc("PEM file of the client certificate (mutual TLS)."),
    Setting::new("security.key_location", "ssl-key-location", File)
        .env("KSTAGE_SSL_KEY_LOCATION")
        .doc("PEM file of the client key (mutual TLS)."),
    Setting::new("security.key_password", "ssl-key-password", Text)
        .env("KSTAGE_SSL_KEY_PASSWORD")
        .secret()
        .doc("Password of the client key (prefer the environment variable)."),
    Setting::new("state_dir", "state-dir", Text)
        .env("KSTAGE_STATE_DIR")
        .value_name("DIR")
        .doc("Stateful topologies: the directory of the local state stores."),
    Setting::new("params", "param", Entries)
        .env("KSTAGE_PARAM")
        .doc("A topology parameter, KEY=VALUE (repeatable)."),
    Setting::new("kafka", "kafka", Entries)
        .env("KSTAGE_KAFKA")
        .doc("A librdkafka setting for both clients, KEY=VALUE (repeatable)."),
    Setting::new("consumer", "consumer-property", Entries)
        .doc("A librdkafka setting for the consumer only, KEY=VALUE (repeatable)."),
    Setting::new("producer", "producer-property", Entries)
        .doc("A librdkafka setting for the producer only, KEY=VALUE (repeatable)."),
];
