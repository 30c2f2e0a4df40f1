//! `kstage topics create`: creates a stage's output topics and its stores' changelog topics
//! with the right settings, because a stage never creates topics itself.
//!
//! Outputs get the input's partition count unless `--partitions` says otherwise; changelogs
//! always get the input's count and `cleanup.policy=compact` (see [`crate::state::topics`]).
//! Topics that exist are left as they are, and the stage's start-up check then says what is
//! wrong with them, if anything.

use std::process::ExitCode;

use clap::Args;
use rdkafka::consumer::BaseConsumer;

use super::args::StageArgs;
use super::config_failure;
use crate::state::topics::{changelog_topic, create_topics, partition_count, TopicPlan};
use crate::topology::Registry;

/// `kstage topics create` flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The stage settings (the config file's topology, inputs, outputs and app_id).
    #[command(flatten)]
    pub stage: StageArgs,
    /// Replication factor of the created topics; -1 takes the broker's
    /// `default.replication.factor`.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,
    /// Partitions of the created output topics (default: the input's). Changelogs always have
    /// the input's.
    #[arg(long)]
    pub partitions: Option<i32>,
}

/// Creates the topics; exit 0 when every one exists afterwards, 1 on a Kafka error, 2 on a bad
/// configuration.
pub(crate) fn create(args: CreateArgs, registry: &Registry) -> ExitCode {
    let mut config = match args.stage.into_config() {
        Ok(config) => config,
        Err(error) => return config_failure(&error.into()),
    };
    // No stage runs here: an instance id (required to run) is not needed to create topics.
    if config.instance_id.is_empty() {
        config.instance_id = "topics-create".into();
    }
    let topology = match config.validate(registry) {
        Ok(topology) => topology,
        Err(errors) => return config_failure(&errors),
    };
    if args.replication_factor == 0 || args.replication_factor < -1 {
        eprintln!("kstage: --replication-factor: must be -1 (the broker's default) or at least 1");
        return ExitCode::from(2);
    }
    let client = crate::engine::consumer_config(&config, "kstage-topics");
    let fail = |message: String| {
        eprintln!("kstage: {message}");
        ExitCode::FAILURE
    };
    let consumer: BaseConsumer = match client.create() {
        Ok(consumer) => consumer,
        Err(error) => return fail(format!("cannot create a Kafka client: {error}")),
    };
    let Some(input) = config.inputs.first() else {
        return fail("the config names no input topic".into());
    };
    let partitions = match partition_count(&consumer, input) {
        Ok(Some(n)) => i32::try_from(n).unwrap_or(i32::MAX),
        Ok(None) => {
            return fail(format!(
                "input topic {input} does not exist; create it first (its partition count is \
                 what the outputs and changelogs take)"
            ))
        }
        Err(error) => return fail(error),
    };
    let mut plans: Vec<TopicPlan> = config
        .outputs
        .values()
        .chain(&config.dead_letter_topic)
        .map(|name| TopicPlan {
            name: name.clone(),
            partitions: args.partitions.unwrap_or(partitions),
            compacted: false,
        })
        .collect();
    plans.extend(topology.stores().iter().map(|store| TopicPlan {
        name: changelog_topic(&config.app_id, store.name),
        partitions,
        compacted: true,
    }));
    match create_topics(&client, &plans, args.replication_factor) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(format!("creating topics failed: {error}")),
    }
}
