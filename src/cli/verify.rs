//! `kstage verify`: the command-line face of [`crate::verify`], with a progress bar while it
//! reads and a JSON report on request.
//!
//! Exit codes: 0 when every check passed, 1 when a check failed, 2 on bad flags, 3 when the
//! verification could not be carried out (a topic is missing, the cluster does not answer).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::verify::{
    self, GroupSpec, Identity, NoProgress, Progress, VerifyConfig, DEFAULT_EXAMPLES,
};

/// How output records name their input record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum IdentityArg {
    /// kstage's provenance headers (kstage.source.topic/partition/offset).
    #[default]
    Provenance,
    /// The record key (unique in the input).
    Key,
    /// A JSON value field, named by --id-field (default `id`), unique in the input.
    Field,
}

/// Flags of `kstage verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Kafka bootstrap servers, host:port[,host:port...] (with --sink: the config's, unless
    /// given here).
    #[arg(
        long,
        env = "KSTAGE_BOOTSTRAP_SERVERS",
        required_unless_present = "sink"
    )]
    pub bootstrap_servers: Option<String>,
    /// Verify a sink instead: compare the PostgreSQL table of this `kstage sink` config file
    /// with its input topics (lost, duplicated, unexpected rows, and values; in idempotent
    /// mode the last value per key). Takes the inputs, table, mapping and mode from the file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["inputs", "outputs", "through", "groups", "id", "id_field"])]
    pub sink: Option<PathBuf>,
    /// An input topic of the pipeline (repeatable).
    #[arg(long = "input", required_unless_present = "sink")]
    pub inputs: Vec<String>,
    /// A final output topic of the pipeline (repeatable; each input record must appear in
    /// exactly one of them).
    #[arg(long = "output", required_unless_present = "sink")]
    pub outputs: Vec<String>,
    /// A middle topic of a chain: provenance pointing into it is followed upstream
    /// (repeatable).
    #[arg(long = "through")]
    pub through: Vec<String>,
    /// How output records name their input record.
    #[arg(long, value_enum, default_value_t)]
    pub id: IdentityArg,
    /// The JSON value field holding a record's unique id (implies --id field).
    #[arg(long, value_name = "NAME")]
    pub id_field: Option<String>,
    /// A consumer group whose committed offsets must have reached the end: GROUP (on the input
    /// topics) or GROUP=TOPIC[+TOPIC...] (repeatable).
    #[arg(long = "group", value_parser = group_spec)]
    pub groups: Vec<GroupSpec>,
    /// How long to wait for open transactions to end (and stable offsets to be readable)
    /// before reporting them as hanging, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub settle_timeout: Duration,
    /// A librdkafka setting for the verifier's clients, KEY=VALUE (repeatable).
    #[arg(long = "kafka", value_parser = key_value)]
    pub kafka: Vec<(String, String)>,
    /// Examples listed per failed check.
    #[arg(long, default_value_t = DEFAULT_EXAMPLES)]
    pub examples: usize,
    /// Print the report as JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    pub report_file: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Check a stateful topology's output instead, against what its one input says it must
    /// be: `count`, `windowed-count:SIZE[:GRACE[:IDLE_CLOSE]]` (tumbling; IDLE_CLOSE as the
    /// stage's `idle_close`: windows open at the input's end are expected too),
    /// `dedupe[:RETENTION[:ID_FIELD]]`, `order-totals` (JSON values).
    #[arg(long, value_name = "TOPOLOGY[:PARAMS]", value_parser = verify::stateful::parse_expectation)]
    pub expect: Option<verify::stateful::Expectation>,
}

/// `--expect`: reads the one input and the one output read_committed and compares the output
/// with the expectation computed from the input.
fn run_stateful(args: &VerifyArgs, expect: &verify::stateful::Expectation) -> ExitCode {
    let ([input], [output]) = (args.inputs.as_slice(), args.outputs.as_slice()) else {
        eprintln!("kstage verify: --expect checks one --input against one --output");
        return ExitCode::from(2);
    };
    let Some(bootstrap) = args.bootstrap_servers.as_deref() else {
        eprintln!("kstage verify: --bootstrap-servers is required with --expect");
        return ExitCode::from(2);
    };
    let client = verify::Client::new(bootstrap, &args.kafka);
    let read = |topic: &str| verify::stateful::read_timed(&client, topic);
    let (inputs, outputs) = match (read(input), read(output)) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("kstage verify: could not verify: {error}");
            return ExitCode::from(3);
        }
    };
    let report = verify::stateful::check(expect, &inputs, &outputs);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("kstage verify: cannot render the report as JSON: {error}");
                return ExitCode::from(3);
            }
        }
    } else {
        println!("{expect:?}: {report}");
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn group_spec(raw: &str) -> Result<GroupSpec, String> {
    let (group, topics) = match raw.split_once('=') {
        Some((group, topics)) => (group, topics.split('+').map(str::to_string).collect()),
        None => (raw, Vec::new()),
    };
    if group.is_empty() || topics.iter().any(String::is_empty) {
        return Err(format!("{raw:?} is not GROUP or GROUP=TOPIC[+TOPIC...]"));
    }
    Ok(GroupSpec {
        group: group.to_string(),
        topics,
    })
}

fn key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}

fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write e.g. 500ms, 30s, 2m"))
}

impl VerifyArgs {
    /// The library settings these flags describe.
    pub fn into_config(self) -> VerifyConfig {
        let identity = match (self.id_field, self.id) {
            (Some(name), _) => Identity::Field(name),
            (None, IdentityArg::Provenance) => Identity::Provenance,
            (None, IdentityArg::Key) => Identity::Key,
            (None, IdentityArg::Field) => Identity::Field("id".to_string()),
        };
        VerifyConfig {
            bootstrap_servers: self.bootstrap_servers.unwrap_or_default(),
            kafka: self.kafka,
            inputs: self.inputs,
            outputs: self.outputs,
            through: self.through,
            identity,
            groups: self.groups,
            settle_timeout: self.settle_timeout,
            examples: self.examples,
        }
    }
}

/// A progress bar on stderr, one read at a time.
pub(super) struct Bar(pub(super) ProgressBar);

impl Progress for Bar {
    fn begin(&self, what: &str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(format!("reading {what}"));
    }

    fn advance(&self, records: u64) {
        self.0.inc(records);
    }

    fn end(&self) {
        self.0.set_position(self.0.length().unwrap_or(0));
    }
}

/// A progress bar on stderr when `show` (and stderr is a terminal).
pub(super) fn progress_bar(show: bool) -> Option<Bar> {
    show.then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{msg:56!} [{bar:30}] {human_pos}/{human_len} eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Bar(bar)
    })
}

/// Runs `kstage verify`.
pub(crate) fn run(args: VerifyArgs, registry: &crate::topology::Registry) -> ExitCode {
    if let Some(path) = args.sink.clone() {
        return super::verify_table::run(&path, args, registry);
    }
    if let Some(expect) = &args.expect {
        return run_stateful(&args, expect);
    }
    let json = args.json;
    let report_file = args.report_file.clone();
    let show_progress = !args.no_progress;
    let config = args.into_config();
    if let Err(error) = config.validate() {
        eprintln!("kstage verify: {error}");
        return ExitCode::from(2);
    }
    let bar = progress_bar(show_progress);
    let progress: &dyn Progress = match &bar {
        Some(bar) => bar,
        None => &NoProgress,
    };
    let result = verify::verify(&config, progress);
    if let Some(bar) = &bar {
        bar.0.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("kstage verify: could not verify: {error}");
            return ExitCode::from(3);
        }
    };
    emit(
        &report,
        &report.to_string(),
        report.passed,
        json,
        report_file,
    )
}

/// Prints a report (text, or JSON with `json`), writes its JSON to `report_file`, and returns
/// the exit code: 0 passed, 1 a check failed, 3 the report could not be written.
pub(super) fn emit<R: serde::Serialize>(
    report: &R,
    text: &str,
    passed: bool,
    json: bool,
    report_file: Option<PathBuf>,
) -> ExitCode {
    let rendered = match serde_json::to_string_pretty(report) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("kstage verify: cannot render the report as JSON: {error}");
            return ExitCode::from(3);
        }
    };
    if let Some(path) = report_file {
        if let Err(error) = std::fs::write(&path, &rendered) {
            eprintln!("kstage verify: cannot write {}: {error}", path.display());
            return ExitCode::from(3);
        }
    }
    let mut stdout = std::io::stdout().lock();
    let printed = if json {
        writeln!(stdout, "{rendered}")
    } else {
        writeln!(stdout, "{text}")
    };
    if let Err(error) = printed {
        eprintln!("kstage verify: cannot print the report: {error}");
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: VerifyArgs,
    }

    fn parse(args: &[&str]) -> Result<VerifyConfig, String> {
        let base = ["kstage", "--bootstrap-servers", "k:9092", "--input", "in"];
        Harness::try_parse_from(base.iter().chain(args))
            .map(|h| h.args.into_config())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn identity_defaults_to_provenance_and_id_field_implies_field() {
        let config = parse(&["--output", "out"]).expect("valid");
        assert_eq!(config.identity, Identity::Provenance);
        let config = parse(&["--output", "out", "--id-field", "order_id"]).expect("valid");
        assert_eq!(config.identity, Identity::Field("order_id".into()));
        let config = parse(&["--output", "out", "--id", "key"]).expect("valid");
        assert_eq!(config.identity, Identity::Key);
    }

    #[test]
    fn groups_name_their_topics_or_default_to_the_inputs() {
        let config =
            parse(&["--output", "out", "--group", "a", "--group", "b=mid+x"]).expect("valid");
        assert_eq!(config.groups[0].topics, Vec::<String>::new());
        assert_eq!(config.groups[1].group, "b");
        assert_eq!(config.groups[1].topics, ["mid", "x"]);
        let err = parse(&["--output", "out", "--group", "b="]).expect_err("empty topic");
        assert!(err.contains("GROUP=TOPIC"), "{err}");
    }

    #[test]
    fn inconsistent_settings_are_refused_before_connecting() {
        let config = parse(&["--output", "in"]).expect("parses");
        let err = config.validate().expect_err("same topic twice");
        assert!(
            err.to_string().contains("both --input and --output"),
            "{err}"
        );
        let config =
            parse(&["--output", "out", "--through", "mid", "--id", "key"]).expect("parses");
        assert!(config.validate().is_err(), "--through needs provenance");
        let err = parse(&["--input", "x"]).expect_err("no output");
        assert!(err.contains("--output"), "{err}");
    }
}
