//! Changelog topics: their names, the start-up check, and `kstage topics create`.
//!
//! A store's changelog is `<app_id>-<store>-changelog`: compacted (the latest value per key is
//! all a restore needs), with exactly as many partitions as the input (changelog partition p
//! holds the state of input partition p). kstage never creates a topic silently: a stage whose
//! changelog is missing, not compacted or of another partition count stops at start-up with an
//! error that names the topic and the command that fixes it; `kstage topics create` creates the
//! outputs and changelogs of a config with the right settings.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::StoreSpec;

/// How every changelog topic's name ends.
pub const CHANGELOG_SUFFIX: &str = "-changelog";

/// The changelog topic of `store` in application `app_id`.
pub fn changelog_topic(app_id: &str, store: &str) -> String {
    format!("{app_id}-{store}{CHANGELOG_SUFFIX}")
}

/// A topic `kstage topics create` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    /// The topic's name.
    pub name: String,
    /// Partitions: the input's count.
    pub partitions: i32,
    /// Whether it is a changelog (compacted).
    pub compacted: bool,
}

/// The partition count of `topic`, from the cluster's metadata.
pub fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Option<usize>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("reading the metadata of topic {topic}: {e}"))?;
    let Some(found) = metadata.topics().first() else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => Ok(Some(found.partitions().len())),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
        Some(other) => Err(format!("topic {topic}: {other}")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the admin client: {e}"))
}

/// The `cleanup.policy` of `topic`.
fn cleanup_policy(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<String, String> {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = runtime()?
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options))
        .map_err(|e| format!("describing topic {topic}: {e}"))?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| format!("describing topic {topic}: no answer"))?
        .map_err(|e| format!("describing topic {topic}: {e}"))?;
    Ok(resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
        .unwrap_or_default())
}

/// Checks every store's changelog: it exists, is compacted, and has `input_partitions`
/// partitions. The error lists every problem, each naming the topic and the fix.
pub fn check_changelogs(
    client: &ClientConfig,
    consumer: &BaseConsumer,
    app_id: &str,
    input: &str,
    input_partitions: usize,
    stores: &[StoreSpec],
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| format!("creating the admin client: {e}"))?;
    let fix = "create it with `kstage topics create --config <stage.toml>`";
    let mut problems = Vec::new();
    for spec in stores {
        let topic = changelog_topic(app_id, spec.name);
        match partition_count(consumer, &topic)? {
            None => problems.push(format!(
                "changelog topic {topic} of store {:?} does not exist; {fix}",
                spec.name
            )),
            Some(found) if found != input_partitions => problems.push(format!(
                "changelog topic {topic} has {found} partitions, but input {input} has \
                 {input_partitions}: changelog partition p holds the state of input partition \
                 p, so they must match; delete and re-create it ({fix})"
            )),
            Some(_) => {
                let policy = cleanup_policy(&admin, &topic)?;
                if !policy.split(',').any(|p| p.trim() == "compact") {
                    problems.push(format!(
                        "changelog topic {topic} has cleanup.policy={policy:?}, not compact: \
                         deletion by retention would lose state; set it with kafka-configs \
                         --alter --entity-type topics --entity-name {topic} --add-config \
                         cleanup.policy=compact"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Creates the topics of `plans` that do not exist yet (`replication`: -1 for the broker's
/// default). Returns one line per topic saying what happened.
pub fn create_topics(
    client: &ClientConfig,
    plans: &[TopicPlan],
    replication: i32,
) -> Result<Vec<String>, String> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| format!("creating the admin client: {e}"))?;
    let topics: Vec<NewTopic<'_>> = plans
        .iter()
        .map(|plan| {
            let topic = NewTopic::new(
                &plan.name,
                plan.partitions,
                TopicReplication::Fixed(replication),
            );
            if plan.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = runtime()?
        .block_on(admin.create_topics(&topics, &options))
        .map_err(|e| format!("creating topics: {e}"))?;
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for (plan, result) in plans.iter().zip(results) {
        let what = if plan.compacted {
            "compacted changelog"
        } else {
            "output"
        };
        match result {
            Ok(name) => lines.push(format!(
                "created {what} topic {name} ({} partitions)",
                plan.partitions
            )),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                lines.push(format!("{what} topic {name} exists already; left as it is"))
            }
            Err((name, code)) => failed.push(format!("{what} topic {name}: {code}")),
        }
    }
    if failed.is_empty() {
        Ok(lines)
    } else {
        Err(failed.join("; "))
    }
}
