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
    let expect = Expectation::WindowedCount {
        size: 10,
        grace: 5,
        idle_close: None,
    };
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
            grace: 200,
            idle_close: None,
        })
    );
    assert_eq!(
        parse_expectation("windowed-count:1h:0s:6s"),
        Ok(Expectation::WindowedCount {
            size: 3_600_000,
            grace: 0,
            idle_close: Some(6_000),
        })
    );
    assert!(parse_expectation("windowed-count:1h:0s:0s").is_err());
    assert_eq!(
        parse_expectation("order-totals"),
        Ok(Expectation::OrderTotals)
    );
    assert!(parse_expectation("order-totals:1s").is_err());
    assert_eq!(
        parse_expectation("dedupe:10m:id"),
        Ok(Expectation::Dedupe {
            retention: 600_000,
            id_field: Some("id".into())
        })
    );
    assert!(parse_expectation("sum").is_err());
}

#[test]
fn windowed_count_with_idle_close_also_expects_the_windows_open_at_the_input_end() {
    let expect = Expectation::WindowedCount {
        size: 10,
        grace: 0,
        idle_close: Some(1_000),
    };
    // [0,10) closes by event time (the record at 12); [10,20) is open at the end and closed
    // on idle; the record at 5 after 12 is late.
    let input = [
        rec(0, 0, "a", "", 1),
        rec(0, 1, "a", "", 12),
        rec(0, 2, "a", "", 5),
        rec(1, 0, "b", "", 3),
    ];
    let good = [window("a", 0, 1), window("a", 10, 1), window("b", 0, 1)];
    let report = check(&expect, &input, &good);
    assert!(report.ok(), "{report}");
    assert_eq!(report.expected, 3);
    // Without idle_close only [0,10) of `a` is closed: the rest is unexpected.
    let event_time_only = Expectation::WindowedCount {
        size: 10,
        grace: 0,
        idle_close: None,
    };
    assert_eq!(check(&event_time_only, &input, &good).unexpected, 2);
    // An idle window never emitted, emitted twice, or with a wrong count.
    assert_eq!(
        check(&expect, &input, &[window("a", 0, 1), window("a", 10, 1)]).missing,
        1
    );
    let twice = [
        window("a", 0, 1),
        window("a", 10, 1),
        window("b", 0, 1),
        window("b", 0, 1),
    ];
    assert_eq!(check(&expect, &input, &twice).duplicated, 1);
    let wrong = [window("a", 0, 2), window("a", 10, 1), window("b", 0, 1)];
    assert_eq!(check(&expect, &input, &wrong).wrong, 1);
}

fn order(customer: &str, items: &str) -> String {
    format!(r#"{{"id":"o","customer":"{customer}","currency":"EUR","items":[{items}]}}"#)
}

fn total(partition: i32, offset: i64, customer: &str, orders: i64, cents: i64) -> TimedRecord {
    let value = serde_json::json!({"customer": customer, "orders": orders, "total_cents": cents});
    rec(partition, offset, customer, &value.to_string(), 0)
}

#[test]
fn order_totals_expects_each_customers_running_total_of_its_valid_orders() {
    // An order on partition 0 at `offset`, keyed `key`, by `customer`, with these items.
    let placed = |offset, key, customer, items| rec(0, offset, key, &order(customer, items), 0);
    let input = [
        placed(0, "a", "a", r#"{"sku":"x","qty":2,"unit_price":1.25}"#),
        placed(1, "b", "b", r#"{"sku":"x","qty":1,"unit_price":0.1}"#),
        // Invalid: key is not the customer; zero quantity; no items; not JSON.
        placed(2, "b", "a", r#"{"sku":"x","qty":1,"unit_price":1}"#),
        placed(3, "a", "a", r#"{"sku":"x","qty":0,"unit_price":1}"#),
        placed(4, "a", "a", ""),
        rec(0, 5, "a", "not json", 0),
        placed(
            6,
            "a",
            "a",
            r#"{"sku":"x","qty":3,"unit_price":0.01},{"sku":"y","qty":1,"unit_price":2}"#,
        ),
    ];
    let good = [
        total(0, 0, "a", 1, 250),
        total(0, 1, "b", 1, 10),
        total(0, 2, "a", 2, 453),
    ];
    let expect = Expectation::OrderTotals;
    let report = check(&expect, &input, &good);
    assert!(report.ok(), "{report}");
    assert_eq!(report.expected, 2);
    // An order added twice (an update repeated), an order counted twice into the total, a
    // customer never updated, an update for no order.
    let repeated = [
        total(0, 0, "a", 1, 250),
        total(0, 1, "a", 1, 250),
        total(0, 2, "b", 1, 10),
        total(0, 3, "a", 2, 453),
    ];
    assert_eq!(check(&expect, &input, &repeated).duplicated, 1);
    let over = [
        total(0, 0, "a", 1, 250),
        total(0, 1, "b", 1, 10),
        total(0, 2, "a", 2, 453),
        total(0, 3, "a", 3, 656),
    ];
    assert_eq!(check(&expect, &input, &over).wrong, 1);
    let lost = [total(0, 0, "a", 1, 250), total(0, 2, "a", 2, 453)];
    assert_eq!(check(&expect, &input, &lost).missing, 1);
    let stray = [
        total(0, 0, "a", 1, 250),
        total(0, 1, "b", 1, 10),
        total(0, 2, "a", 2, 453),
        total(0, 3, "c", 1, 5),
    ];
    assert_eq!(check(&expect, &input, &stray).unexpected, 1);
}
