//! The test harness: every test declares what it needs from its environment ([`Need`]), and a
//! test whose needs are not met is *ignored* (reported as such in libtest's summary line,
//! `test result: ok. N passed; 0 failed; K ignored`), never run to a vacuous "ok".
//!
//! What is available is decided from the environment once, before any test runs:
//!
//! | need | available when |
//! |---|---|
//! | [`Need::Broker`] | `KSTAGE_TEST_BOOTSTRAP` is set (`scripts/test.sh` sets it), or cargo feature `testcontainers` |
//! | [`Need::Registry`] | `KSTAGE_TEST_REGISTRY_URL` is set |
//! | [`Need::Postgres`] | `KSTAGE_TEST_PG_URL` is set (`scripts/test.sh` starts `scripts/postgres.sh` and sets it) |
//! | [`Need::Python`] | `KSTAGE_TEST_PYTHON` is set (`scripts/python-env.sh` prints it) |
//! | [`Need::OwnBrokers`] | `KSTAGE_TEST_BOOTSTRAP` is set: the machine runs brokers, so the test may start its own (a secure broker) |
//! | [`Need::ThreeBrokers`] | `KSTAGE_RELIABILITY_CLUSTER_DATA` and `_PORT` name a running cluster, or as [`Need::OwnBrokers`] |
//! | [`Need::FullRun`] | `KSTAGE_RELIABILITY=full` (`scripts/reliability.sh`): the long reliability scenarios |
//!
//! `KSTAGE_TEST_REQUIRE_BROKER=1` (set by `scripts/test.sh`) turns every missing environment
//! (all needs but [`Need::FullRun`], which is a choice of run, not an environment) into a
//! failure instead: a CI run that meant to test against a broker must not pass by ignoring
//! its tests. A test run anyway (`--include-ignored`) without its environment fails: the
//! fixtures panic rather than return early.

use libtest_mimic::{Arguments, Trial};

/// What a test needs besides the `kstage` binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The real broker named by `KSTAGE_TEST_BOOTSTRAP`.
    Broker,
    /// The schema registry named by `KSTAGE_TEST_REGISTRY_URL`.
    Registry,
    /// The PostgreSQL named by `KSTAGE_TEST_PG_URL` (the sink tests).
    Postgres,
    /// Confluent's Python client, `KSTAGE_TEST_PYTHON`.
    Python,
    /// A machine that runs brokers, where the test starts a broker of its own.
    OwnBrokers,
    /// A three-broker cluster (given, or started by the test).
    ThreeBrokers,
    /// The full reliability run.
    FullRun,
}

fn set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// True when `KSTAGE_TEST_REQUIRE_BROKER=1`: a missing environment fails the tests needing it.
pub fn required() -> bool {
    std::env::var("KSTAGE_TEST_REQUIRE_BROKER").as_deref() == Ok("1")
}

impl Need {
    /// Why the environment does not meet this need, or `None` when it does.
    pub fn missing(self) -> Option<&'static str> {
        let (met, why) = match self {
            Need::Broker => (
                set("KSTAGE_TEST_BOOTSTRAP") || cfg!(feature = "testcontainers"),
                "no broker (set KSTAGE_TEST_BOOTSTRAP=host:port or run scripts/test.sh)",
            ),
            Need::Registry => (
                set("KSTAGE_TEST_REGISTRY_URL"),
                "no schema registry (set KSTAGE_TEST_REGISTRY_URL or run scripts/test.sh)",
            ),
            Need::Postgres => (
                set("KSTAGE_TEST_PG_URL"),
                "no PostgreSQL (set KSTAGE_TEST_PG_URL or run scripts/test.sh)",
            ),
            Need::Python => (
                set("KSTAGE_TEST_PYTHON"),
                "no Python client (export KSTAGE_TEST_PYTHON=\"$(scripts/python-env.sh)\")",
            ),
            Need::OwnBrokers => (
                set("KSTAGE_TEST_BOOTSTRAP"),
                "no broker environment (run scripts/test.sh; the test starts brokers of its own)",
            ),
            Need::ThreeBrokers => (
                (set("KSTAGE_RELIABILITY_CLUSTER_DATA") && set("KSTAGE_RELIABILITY_CLUSTER_PORT"))
                    || set("KSTAGE_TEST_BOOTSTRAP"),
                "no broker environment for three brokers (run scripts/test.sh or \
                 scripts/reliability.sh)",
            ),
            Need::FullRun => {
                return (std::env::var("KSTAGE_RELIABILITY").as_deref() != Ok("full")).then_some(
                    "not in the short set (KSTAGE_RELIABILITY=full, scripts/reliability.sh, runs it)",
                );
            }
        };
        (!met && !required()).then_some(why)
    }
}

/// One test: `<module>::<name>` (the module path without the binary's own name), ignored when
/// one of `needs` is missing.
pub fn trial(module: &str, name: &str, needs: &[Need], test: fn()) -> Trial {
    let module = module.strip_prefix("it::").unwrap_or(module);
    let ignored = needs.iter().any(|need| need.missing().is_some());
    Trial::test(format!("{module}::{name}"), move || {
        test();
        Ok(())
    })
    .with_ignored_flag(ignored)
}

/// `trials! { test_function => [Need, ...], ... }` defines the module's `trials()`: one
/// [`Trial`] per test function, named after it, with its needs.
macro_rules! trials {
    ($($test:ident => [$($need:ident),* $(,)?]),* $(,)?) => {
        /// This module's tests, for the harness (`tests/it/harness.rs`).
        pub fn trials() -> Vec<libtest_mimic::Trial> {
            vec![$($crate::harness::trial(
                module_path!(),
                stringify!($test),
                &[$($crate::harness::Need::$need),*],
                $test,
            )),*]
        }
    };
}

/// libtest's flags that take a value (as the next argument, or after `=`).
const VALUE_FLAGS: [&str; 6] = [
    "--test-threads",
    "--skip",
    "--color",
    "--format",
    "--logfile",
    "-Z",
];

/// The command line, as libtest reads it: like libtest (and unlike `libtest-mimic`, which takes
/// one), any number of name filters, a test running when its name matches one of them.
pub fn arguments() -> (Arguments, Vec<String>) {
    let mut args = std::env::args();
    let mut flags: Vec<String> = args.next().into_iter().collect();
    let mut filters = Vec::new();
    while let Some(arg) = args.next() {
        if VALUE_FLAGS.contains(&arg.as_str()) {
            flags.push(arg);
            flags.extend(args.next());
        } else if arg.starts_with('-') {
            flags.push(arg);
        } else {
            filters.push(arg);
        }
    }
    (Arguments::from_iter(flags), filters)
}

/// Says once, on stderr, which needs are missing (libtest's summary only counts the ignored
/// tests), then runs the trials whose names match a filter (all without filters) the way
/// libtest would.
pub fn run(
    mut arguments: Arguments,
    filters: &[String],
    mut trials: Vec<Trial>,
) -> std::process::ExitCode {
    match filters {
        [] => {}
        [one] => arguments.filter = Some(one.clone()),
        several => trials.retain(|trial| {
            several.iter().any(|filter| {
                if arguments.exact {
                    trial.name() == filter
                } else {
                    trial.name().contains(filter.as_str())
                }
            })
        }),
    }
    let needs = [
        Need::Broker,
        Need::Registry,
        Need::Postgres,
        Need::Python,
        Need::OwnBrokers,
        Need::ThreeBrokers,
        Need::FullRun,
    ];
    if !arguments.list {
        for need in needs {
            if let Some(why) = need.missing() {
                eprintln!("ignoring the tests that need {need:?}: {why}");
            }
        }
    }
    libtest_mimic::run(&arguments, trials).exit_code()
}
