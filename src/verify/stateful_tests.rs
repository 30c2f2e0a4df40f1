//! The stateful expectations on hand-made inputs and outputs, each shown to catch a loss, a
//! duplicate and a wrong value.

use super::*;

fn rec(partition: i32, offset: i64, key: &str, value: &str, ts: i64) -> TimedRecord {
    TimedRecord {
        partition,
        offset,
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        timestamp: Some(ts),
        source: None,
    }
}

#[test]
fn count_expects_each_key_counted_one_to_n_in_order() {
    let input = [
        rec(0, 0, "a", "", 0),
        rec(0, 1, "a", "", 0),
        rec(1, 0, "b", "", 0),
    ];
    let good = [
        rec(0, 0, "a", "1", 0),
        rec(1, 0, "b", "1", 0),
        rec(0, 1, "a", "2", 0),
    ];
    assert!(check(&Expectation::Count, &input, &good).ok());
    let repeated = [
        rec(0, 0, "a", "1", 0),
        rec(0, 1, "a", "1", 0),
        rec(0, 2, "a", "2", 0),
        rec(1, 0, "b", "1", 0),
    ];
    let report = check(&Expectation::Count, &input, &repeated);
    assert_eq!(report.duplicated, 1, "{report}");
    let over = [
        rec(0, 0, "a", "1", 0),
        rec(0, 1, "a", "2", 0),
        rec(0, 2, "a", "3", 0),
        rec(1, 0, "b", "1", 0),
    ];
    assert_eq!(check(&Expectation::Count, &input, &over).wrong, 1);
    let lost = [rec(0, 0, "a", "1", 0), rec(0, 1, "a", "2", 0)];
    assert_eq!(check(&Expectation::Count, &input, &lost).missing, 1);
}

fn window(key: &str, start: i64, count: u64) -> TimedRecord {
    let value = serde_json::json!({"key": key, "start": start, "count": count}).to_string();
    rec(0, 0, key, &value, start)
}

#[test]
fn windowed_count_expects_one_result_per_closed_window_and_skips_late_records() {
    let expect = Expectation::WindowedCount { size: 10, grace: 5 };
    // [0,10): a at 1, 8; a at 3 arrives after stream time 16 (late); [10,20) closes at 25,
    // which the input reaches with the record at 30; [30,40) stays open.
    let input = [
        rec(0, 0, "a", "", 1),
        rec(0, 1, "a", "", 8),
        rec(0, 2, "b", "", 16),
        rec(0, 3, "a", "", 3),
        rec(0, 4, "b", "", 30),
    ];
    let good = [window("a", 0, 2), window("b", 10, 1)];
    let report = check(&expect, &input, &good);
    assert!(report.ok(), "{report}");
    assert_eq!(report.expected, 2);
    assert_eq!(
        check(&expect, &input, &[window("a", 0, 3), window("b", 10, 1)]).wrong,
        1
    );
    assert_eq!(
        check(
            &expect,
            &input,
            &[window("a", 0, 2), window("a", 0, 2), window("b", 10, 1)]
        )
        .duplicated,
        1
    );
    assert_eq!(check(&expect, &input, &[window("a", 0, 2)]).missing, 1);
    assert_eq!(
        check(
            &expect,
            &input,
            &[window("a", 0, 2), window("b", 10, 1), window("b", 30, 1)]
        )
        .unexpected,
        1
    );
}

#[test]
fn dedupe_expects_exactly_the_first_occurrences_within_the_retention() {
    let expect = Expectation::Dedupe {
        retention: 100,
        id_field: None,
    };
    let input = [
        rec(0, 0, "a", "", 0),
        rec(0, 1, "a", "", 50),
        rec(0, 2, "b", "", 60),
        rec(0, 3, "a", "", 100),
    ];
    let forwarded = |offsets: &[i64]| -> Vec<TimedRecord> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, o)| TimedRecord {
                source: Some((0, *o)),
                ..rec(0, i as i64, "", "", 0)
            })
            .collect()
    };
    assert!(check(&expect, &input, &forwarded(&[0, 2, 3])).ok());
    assert_eq!(
        check(&expect, &input, &forwarded(&[0, 1, 2, 3])).unexpected,
        1
    );
    assert_eq!(
        check(&expect, &input, &forwarded(&[0, 2, 3, 3])).duplicated,
        1
    );
    assert_eq!(check(&expect, &input, &forwarded(&[0, 2])).missing, 1);
}

#[test]
fn expectations_parse_from_the_flag() {
    assert_eq!(parse_expectation("count"), Ok(Expectation::Count));
    assert_eq!(
        parse_expectation("windowed-count:1s:200ms"),
        Ok(Expectation::WindowedCount {
            size: 1000,
            grace: 200
        })
    );
    assert_eq!(
        parse_expectation("dedupe:10m:id"),
        Ok(Expectation::Dedupe {
            retention: 600_000,
            id_field: Some("id".into())
        })
    );
    assert!(parse_expectation("sum").is_err());
}
