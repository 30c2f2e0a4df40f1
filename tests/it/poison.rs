//! Poison policies: bad input of every kind mixed among good records. Under `dead_letter` every
//! bad record lands in the dead-letter topic once, with its original key, value and headers and
//! headers naming the error and the input coordinates; under `skip` it is logged and counted;
//! under `fail` the stage stops at it without committing it. Exactly once holds for the outputs
//! and the dead-letter topic alike, across SIGKILLs.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kills::{drain_then_stop, kill_repeatedly};
use common::ledger::{copies, Destination, Expect, Ledger};
use common::mix::{bad_kinds, mix, Encoding};
use common::orders::order;
use common::orders_stage::{log_field, wait_exit_code, OrdersPipeline, ValueFormat};
use common::raw::{Coordinates, RawRecord, RawWriter};
use common::read::{end_offsets, Isolation};
use common::registry::avro_codecs;
use common::values::{avro_values, json_values};
use common::PATIENCE;

/// Runs a `dead_letter` stage over a mix of every bad kind (each at least twice) and checks the
/// accounting: every good record once in its output, every bad one once in the dead-letter topic.
fn dead_letter_accounts_for_every_record(format: ValueFormat, registry: Option<&str>) {
    let broker = require_broker!();
    let pipeline = OrdersPipeline::new(&broker, 3);
    let codecs = registry.map(|url| {
        avro_codecs(
            url,
            &[pipeline.input(), pipeline.output(), &pipeline.invalid],
        )
    });
    let encoding = match &codecs {
        None => Encoding::Json,
        Some(codecs) => Encoding::Avro {
            codecs,
            topic: pipeline.input(),
        },
    };
    let units = 2 * bad_kinds(&encoding);
    let mut ledger = Ledger::new(pipeline.input());
    let mut writer = pipeline.writer();
    pipeline.write(&mut writer, &mut ledger, mix(&encoding, "dl", units, 4));
    let kinds: BTreeSet<&str> = ledger
        .entries
        .values()
        .filter_map(|(_, e)| match e {
            Expect::DeadLetter { what, .. } => Some(*what),
            _ => None,
        })
        .collect();
    eprintln!("bad kinds written: {kinds:?}");

    let spec = pipeline.dead_letter_stage(format, registry);
    let stage = pipeline.run_to_end(&spec, &writer.end_offsets());

    let accounting = match &codecs {
        None => pipeline.account(&ledger, Isolation::ReadCommitted, &json_values),
        Some(codecs) => pipeline.account(
            &ledger,
            Isolation::ReadCommitted,
            &avro_values(codecs, &pipeline),
        ),
    };
    accounting.assert_exactly_once(&format!(
        "{format:?} mix under dead_letter (read_committed)"
    ));
    // For the log: what the stage says about each kind.
    let mut described = BTreeSet::new();
    for record in &pipeline.read_all(Isolation::ReadCommitted)[2] {
        let at = common::ledger::provenance(record).expect("provenance").1;
        if let Expect::DeadLetter { what, .. } = &ledger.entries[&at].1 {
            let message = record
                .header(kstage::topology::headers::ERROR_MESSAGE)
                .unwrap_or_default();
            if described.insert(*what) {
                eprintln!("{what}: {}", String::from_utf8_lossy(message));
            }
        }
    }
    assert_eq!(described, kinds, "every bad kind was dead-lettered");
    assert_eq!(
        accounting.totals[&Destination::DeadLetter],
        ledger.count_bad()
    );
    assert_eq!(
        accounting.totals[&Destination::Output] + accounting.totals[&Destination::Invalid],
        ledger.count_good()
    );
    assert_eq!(
        log_field(&stage.stderr(), "Stage stopped cleanly.", "dead_lettered").as_deref(),
        Some(ledger.count_bad().to_string().as_str()),
        "the final log line counts the dead letters"
    );
    assert!(pipeline.settled(), "a destination has an open transaction");
}

fn dead_letter_json_mix_accounts_for_every_record() {
    dead_letter_accounts_for_every_record(ValueFormat::Json, None);
}

fn dead_letter_avro_mix_accounts_for_every_record() {
    let url = require_registry!();
    dead_letter_accounts_for_every_record(ValueFormat::Avro, Some(&url));
}

/// The coordinates of every "Skipped a record" log line.
fn skipped_in_log(log: &str) -> Vec<Coordinates> {
    log.lines()
        .filter(|line| line.contains("Skipped a record"))
        .map(|line| Coordinates {
            partition: log_field(line, "Skipped", "partition")
                .and_then(|p| p.parse().ok())
                .unwrap_or(-1),
            offset: log_field(line, "Skipped", "offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1),
        })
        .collect()
}

fn skip_policy_logs_and_counts_each_bad_record_once() {
    let broker = require_broker!();
    let url = require_registry!();
    let pipeline = OrdersPipeline::new(&broker, 3);
    let codecs = avro_codecs(
        &url,
        &[pipeline.input(), pipeline.output(), &pipeline.invalid],
    );
    let encoding = Encoding::Avro {
        codecs: &codecs,
        topic: pipeline.input(),
    };
    let mut ledger = Ledger::new(pipeline.input());
    let mut writer = pipeline.writer();
    pipeline.write(
        &mut writer,
        &mut ledger,
        mix(&encoding, "sk", 2 * bad_kinds(&encoding), 4),
    );

    let spec = pipeline
        .stage(ValueFormat::Avro, Some(&url))
        .arg("--poison-policy", "skip");
    let stage = pipeline.run_to_end(&spec, &writer.end_offsets());

    // Good records out exactly once; the bad ones nowhere: accounted against the good records
    // alone, a good one not seen is lost and a bad one seen anywhere is unexpected.
    let accounting = pipeline.account(
        &ledger.good_only(),
        Isolation::ReadCommitted,
        &avro_values(&codecs, &pipeline),
    );
    let bad: BTreeSet<Coordinates> = ledger
        .entries
        .iter()
        .filter(|(_, (_, e))| e.is_bad())
        .map(|(at, _)| *at)
        .collect();
    assert!(!bad.is_empty(), "the mix holds bad records");
    accounting.assert_exactly_once("skip run: good records once, bad ones nowhere");
    assert_eq!(
        accounting.totals[&Destination::DeadLetter],
        0,
        "nothing dead-lettered"
    );

    let log = stage.stderr();
    let logged: Vec<Coordinates> = skipped_in_log(&log);
    assert_eq!(
        logged.iter().copied().collect::<BTreeSet<_>>(),
        bad,
        "one \"Skipped a record\" line per bad record, naming its partition and offset"
    );
    assert_eq!(logged.len(), bad.len(), "each bad record logged once");
    assert_eq!(
        log_field(&log, "Stage stopped cleanly.", "skipped"),
        Some(bad.len().to_string()),
        "the final log line counts the skipped records"
    );
}

fn fail_policy_stops_at_the_first_bad_record_and_dead_letter_resumes_there() {
    let broker = require_broker!();
    let pipeline = OrdersPipeline::new(&broker, 1);
    let json =
        |n: usize| serde_json::to_vec(&order(&format!("f-{n}"), 1, 1, 250, "web")).expect("JSON");
    let mut records: Vec<(RawRecord, Expect)> = (0..60)
        .map(|n| {
            (
                RawRecord::new(Some(&format!("f-{n}")), Some(json(n))),
                Expect::Output,
            )
        })
        .collect();
    records[25] = (
        RawRecord::new(Some("f-bad"), Some(b"{not json".to_vec())).header("trace", "first"),
        Expect::DeadLetter {
            class: "decode",
            what: "malformed JSON",
        },
    );
    records[40] = (
        RawRecord::new(None, Some(json(40))).header("trace", "second"),
        Expect::DeadLetter {
            class: "decode",
            what: "null key",
        },
    );
    let mut ledger = Ledger::new(pipeline.input());
    let mut writer = pipeline.writer();
    pipeline.write(&mut writer, &mut ledger, records);
    let first_bad = format!("{}/0@25", pipeline.input());

    // `fail`, twice: each incarnation stops at the same record, so its offset was not committed.
    for attempt in 0..2 {
        let mut stage = pipeline.stage(ValueFormat::Json, None).spawn();
        let code = wait_exit_code(&mut stage, PATIENCE);
        if code != Some(1) {
            stage.fail(&format!(
                "attempt {attempt}: poison_policy fail should exit 1, got {code:?}"
            ));
        }
        if !stage.stderr().contains(&first_bad) {
            stage.fail(&format!(
                "attempt {attempt}: the error does not name {first_bad}"
            ));
        }
        let committed = pipeline.group_offsets(true).committed()[0];
        assert!(
            committed.unwrap_or(0) <= 25,
            "committed {committed:?} past the poison record"
        );
        let [output, _, dead] = pipeline.read_all(Isolation::ReadCommitted);
        let past: Vec<_> = copies(&output)
            .into_keys()
            .filter(|at| at.offset >= 25)
            .collect();
        assert!(
            past.is_empty(),
            "outputs of records at or after the poison: {past:?}"
        );
        assert!(dead.is_empty(), "nothing is dead-lettered under fail");
    }

    // Same app id with `dead_letter`: it resumes at the poison record; everything accounted for.
    let spec = pipeline.dead_letter_stage(ValueFormat::Json, None);
    pipeline.run_to_end(&spec, &writer.end_offsets());
    let accounting = pipeline.account(&ledger, Isolation::ReadCommitted, &json_values);
    accounting.assert_exactly_once("fail, then dead_letter (read_committed)");
    assert_eq!(accounting.totals[&Destination::DeadLetter], 2);
}

/// SIGKILLs per round of the crash test.
const KILLS: usize = 4;

/// Feeds the input with a steady stream of small mixes (70 records every 25 ms) while stages
/// come and go, so that a kill lands inside a transaction that has records on the broker.
struct Feed<'a> {
    pipeline: &'a OrdersPipeline,
    writer: RawWriter,
    ledger: Ledger,
    chunks: usize,
}

impl Feed<'_> {
    /// Writes one chunk (not flushed) and pauses.
    fn chunk(&mut self) {
        let records = mix(&Encoding::Json, &format!("cr{}", self.chunks), 10, 4);
        self.chunks += 1;
        let (raw, expects): (Vec<_>, Vec<_>) = records.into_iter().unzip();
        let places = self.writer.write_all(raw.clone());
        for ((at, record), expect) in places.into_iter().zip(raw).zip(expects) {
            self.ledger.add(at, record, expect);
        }
        std::thread::sleep(Duration::from_millis(25));
    }

    /// Starts `spec` `KILLS` times; each incarnation is fed until it has committed something,
    /// then for a random while longer, and SIGKILLed. Then a last incarnation drains the input.
    fn kill_repeatedly_then_drain(&mut self, spec: &common::StageSpec) {
        let offsets = self.pipeline.group_offsets(false);
        kill_repeatedly(spec, &offsets, KILLS, |_, stage| {
            let before = offsets.progress();
            let deadline = std::time::Instant::now() + PATIENCE;
            while offsets.progress() <= before {
                if stage.try_exit().is_some() || std::time::Instant::now() > deadline {
                    stage.fail("the stage made no progress on a steadily fed input");
                }
                self.chunk();
            }
            for _ in 0..rand::random_range(4..24) {
                self.chunk();
            }
        });
        self.writer.flush();
        drain_then_stop(&self.pipeline.base, spec, &self.writer.end_offsets());
    }
}

fn dead_letters_stay_exactly_once_across_sigkill_restarts() {
    let broker = require_broker!();
    let pipeline = OrdersPipeline::new(&broker, 3);
    // Transactions that stay open for 200 ms while records stream in and out.
    let spec = pipeline
        .dead_letter_stage(ValueFormat::Json, None)
        .instance("crashy")
        .arg("--commit-interval", "200ms");
    let mut feed = Feed {
        pipeline: &pipeline,
        writer: pipeline.writer(),
        ledger: Ledger::new(pipeline.input()),
        chunks: 0,
    };

    // Extra copies in the read_uncommitted view: (outputs, dead letters).
    let mut extra = (0, 0);
    let extra_copies =
        |records: &[common::ReadRecord]| copies(records).values().map(|n| n - 1).sum::<usize>();
    for round in 0..3 {
        feed.kill_repeatedly_then_drain(&spec);
        let [output, invalid, dead] = pipeline.read_all(Isolation::ReadUncommitted);
        let outputs: Vec<_> = output.into_iter().chain(invalid).collect();
        extra = (extra_copies(&outputs), extra_copies(&dead));
        eprintln!(
            "round {round}: extra copies in the read_uncommitted view (outputs, dead letters): \
             {extra:?}"
        );
        if extra.0 > 0 && extra.1 > 0 {
            break;
        }
    }
    let ledger = &feed.ledger;
    let accounting = pipeline.account(ledger, Isolation::ReadCommitted, &json_values);
    accounting
        .assert_exactly_once("outputs and dead letters after SIGKILL restarts (read_committed)");
    assert_eq!(
        accounting.totals[&Destination::DeadLetter],
        ledger.count_bad()
    );
    assert!(pipeline.settled(), "a destination has an open transaction");
    assert!(
        extra.0 > 0 && extra.1 > 0,
        "the read_uncommitted view shows no duplicates {extra:?} (outputs, dead letters) after \
         repeated SIGKILLs, so this test could not tell exactly-once from at-least-once"
    );
    let ends = end_offsets(
        &broker.bootstrap,
        pipeline.input(),
        Isolation::ReadUncommitted,
    );
    assert_eq!(
        pipeline.group_offsets(true).committed(),
        ends.into_iter().map(Some).collect::<Vec<_>>()
    );
}

trials! {
    dead_letter_json_mix_accounts_for_every_record => [Broker],
    dead_letter_avro_mix_accounts_for_every_record => [Broker, Registry],
    skip_policy_logs_and_counts_each_bad_record_once => [Broker, Registry],
    fail_policy_stops_at_the_first_bad_record_and_dead_letter_resumes_there => [Broker],
    dead_letters_stay_exactly_once_across_sigkill_restarts => [Broker],
}
