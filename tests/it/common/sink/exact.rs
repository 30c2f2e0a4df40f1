//! One transactional sink test's world: a fresh input topic, group and table (no unique key, so
//! duplicate rows show), the sink spec for it, and the check: which input ids are missing from
//! the table and which appear more than once.

use std::collections::BTreeMap;

use crate::common::read::GroupOffsets;
use crate::common::stage::Stage;
use crate::common::{create_topic, unique_name, InputRecord, PATIENCE};

use super::{Pg, SinkSpec};

/// The columns of the transactional tests' table: the input id and its provenance.
pub const ID_COLUMNS: &str =
    "id = \"value.id\"\nsrc_partition = \"partition\"\nsrc_offset = \"offset\"";

/// One transactional test: a fresh topic, group and table (no unique key, so duplicates show).
pub struct Exact {
    pub bootstrap: String,
    pub input: String,
    pub app_id: String,
    pub table: String,
    pub url: String,
    pub pg: Pg,
}

impl Exact {
    /// Waits until `sink` has stored `offsets` (the sum of its partitions' next offsets) in
    /// `kstage_offsets`, i.e. it has committed the whole input, then stops it with SIGTERM and
    /// asserts a clean exit.
    pub fn drain_and_stop(&mut self, sink: &mut Stage, offsets: i64) {
        let (pg, app) = (&mut self.pg, &self.app_id);
        sink.wait_until(PATIENCE, "the sink stored the whole input", || {
            pg.stored_offsets(app) == offsets
        });
        assert_eq!(sink.stop(), Some(0), "the sink did not stop cleanly");
    }

    pub fn new(bootstrap: &str, url: &str, partitions: i32) -> Self {
        let (input, app_id) = (unique_name("sink-in"), unique_name("sink-app"));
        let table = unique_name("t").replace('-', "_");
        create_topic(bootstrap, &input, partitions);
        let mut pg = Pg::connect(url);
        pg.execute(&format!(
            "CREATE TABLE {table} (id text NOT NULL, src_partition int NOT NULL, src_offset bigint NOT NULL)"
        ));
        Self {
            bootstrap: bootstrap.to_string(),
            input,
            app_id,
            table,
            url: url.to_string(),
            pg,
        }
    }

    pub fn spec(&self, mode: &str) -> SinkSpec {
        SinkSpec::new(
            &self.bootstrap,
            &self.input,
            &self.app_id,
            &self.url,
            mode,
            &self.table,
            ID_COLUMNS,
        )
    }

    pub fn rows(&mut self) -> i64 {
        self.pg
            .count(&format!("SELECT count(*) FROM {}", self.table))
    }

    pub fn offsets(&self) -> GroupOffsets {
        GroupOffsets::new(&self.bootstrap, &self.app_id, &self.input, false)
    }

    /// (lost, duplicated) ids against what was written.
    pub fn check(&mut self, written: &[InputRecord]) -> (usize, usize) {
        let rows = self.pg.query(&format!(
            "SELECT id, count(*) FROM {} GROUP BY id",
            self.table
        ));
        let counts: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let lost = written
            .iter()
            .filter(|w| !counts.contains_key(&w.id))
            .count();
        let duplicated = counts.values().filter(|&&c| c > 1).count();
        (lost, duplicated)
    }
}
