//! `order-lines` (a sink topology, `kstage sink` with `[sink] topology = "order-lines"`): each
//! order (JSON or Avro, the `orders` topology's input type) becomes one row in table `orders`
//! and one row per line in table `order_lines`, written in one database transaction with its
//! offsets.
//!
//! Tables (name them in `[sink.tables]`):
//!
//! * `orders (id, customer, currency, channel, item_count, total)`, key `id`; `total` is the sum
//!   of qty x unit_price, summed in integer cents and written with two decimals;
//! * `order_lines (order_id, line, sku, qty, unit_price)`, key `(order_id, line)`; `line` counts
//!   from 0. `orders` is written first, so `order_lines.order_id` may reference it.
//!
//! An order with no lines, or a line with a quantity below 1, is invalid: poison, for the
//! stage's poison policy (a dead letter names the reason). No parameters.

use kstage::sink::topology::{SinkRecord, SinkRows, SinkTable, SinkTopology};
use kstage::topology::{TopologyError, TopologyParams};

use super::orders::Order;

/// One line for `kstage topologies`.
pub const DESCRIPTION: &str =
    "orders -> one row per order in `orders`, one per line in `order_lines` (a sink topology)";

/// The sink topology.
#[derive(Debug, Default)]
pub struct OrderLines;

/// Builds it (no parameters).
pub fn build(params: &TopologyParams) -> Result<Box<dyn SinkTopology>, String> {
    params.deny_unknown(&[])?;
    Ok(Box::new(OrderLines))
}

fn text(value: impl ToString) -> Option<String> {
    Some(value.to_string())
}

impl SinkTopology for OrderLines {
    fn tables(&self) -> Vec<SinkTable> {
        vec![
            SinkTable::new(
                "orders",
                &[
                    "id",
                    "customer",
                    "currency",
                    "channel",
                    "item_count",
                    "total",
                ],
            )
            .key(&["id"]),
            SinkTable::new(
                "order_lines",
                &["order_id", "line", "sku", "qty", "unit_price"],
            )
            .key(&["order_id", "line"]),
        ]
    }

    fn process(
        &mut self,
        record: &SinkRecord<'_>,
        rows: &mut SinkRows,
    ) -> Result<(), TopologyError> {
        let order: Order = record.value()?;
        if order.items.is_empty() {
            return Err(TopologyError::invalid(format!(
                "order {} has no lines",
                order.id
            )));
        }
        let mut cents: i64 = 0;
        let mut units: i64 = 0;
        for item in &order.items {
            if item.qty < 1 {
                return Err(TopologyError::invalid(format!(
                    "order {} has a line of {} x {}",
                    order.id, item.qty, item.sku
                )));
            }
            // Prices are decimals with at most two places: sum them in whole cents.
            let unit = (item.unit_price * 100.0).round() as i64;
            cents += unit * i64::from(item.qty);
            units += i64::from(item.qty);
        }
        rows.push(
            "orders",
            vec![
                text(&order.id),
                text(&order.customer),
                text(&order.currency),
                text(&order.channel),
                text(units),
                text(format!("{}.{:02}", cents / 100, cents % 100)),
            ],
        )?;
        for (line, item) in order.items.iter().enumerate() {
            rows.push(
                "order_lines",
                vec![
                    text(&order.id),
                    text(line),
                    text(&item.sku),
                    text(item.qty),
                    text(item.unit_price),
                ],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstage::codec::Codecs;
    use kstage::sink::topology::SinkRecord;

    #[test]
    fn an_order_becomes_one_order_row_and_one_row_per_line() {
        let json = br#"{"id":"o-1","customer":"c","currency":"EUR","items":[{"sku":"a","qty":2,"unit_price":9.5},{"sku":"b","qty":1,"unit_price":0.1}]}"#;
        let codecs = Codecs::plain();
        let record = SinkRecord::for_test(Some(json), "in", &codecs);
        let mut rows = SinkRows::for_tables(&OrderLines.tables());
        OrderLines.process(&record, &mut rows).expect("valid");
        let all = rows.into_rows();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].0, "orders");
        assert_eq!(all[0].1[4..], [text(3), text("19.10")]);
        assert_eq!(
            all[2].1,
            vec![text("o-1"), text(1), text("b"), text(1), text(0.1)]
        );

        let empty = br#"{"id":"o-2","customer":"c","currency":"EUR","items":[]}"#;
        let record = SinkRecord::for_test(Some(empty), "in", &codecs);
        let mut rows = SinkRows::for_tables(&OrderLines.tables());
        let error = OrderLines.process(&record, &mut rows).expect_err("invalid");
        assert!(error.to_string().contains("no lines"), "{error}");
    }
}
