//! The local store of one input partition: an embedded redb file holding every store the
//! topology declares, plus, per store, the changelog offset the file has reached.
//!
//! ```text
//!   <state_dir>/<app_id>/<instance_id>/<input topic>-<partition>.redb
//!     table "s:<store>"   key bytes -> value bytes        (one per declared store)
//!     table "offsets"     store name -> next changelog offset to read (u64)
//! ```
//!
//! Invariants:
//! * A store's contents and its changelog offset change together, in one redb write
//!   transaction ([`LocalStore::apply`]), so the file is always "the changelog replayed up to
//!   the offset it names". redb commits are atomic and a crash (kill -9) leaves the last
//!   committed transaction (measured: docs/STATE.md, "Choosing the store").
//! * The offset may lag what the file holds (it is a lower bound, never an upper one): replaying
//!   a changelog of absolute values from an earlier offset converges to the same contents, so a
//!   lower offset only costs restore time. It never runs ahead of what the file holds.
//! * Commits are durable (`Durability::Immediate`): one fsync per committed Kafka transaction
//!   and partition.
//! * Reads (`get`, `range`) go through read-only tables of the last commit, opened on the first
//!   read after a write and dropped at the start of the next write (`apply`), so a read never
//!   sees an older commit and no read transaction outlives the commit after it. (One read
//!   transaction per `get` was 8% of `windowed-count`'s instructions: docs/STATE.md.)

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTableMetadata, TableDefinition, TableHandle,
};

use super::StateError;

/// Store name -> next changelog offset to read.
const OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("offsets");

/// Writes of one store: key -> new value (`None`: deleted).
pub(crate) type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A store's table, read-only, as of the last commit.
type ReadTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// One partition's local store file.
pub(crate) struct LocalStore {
    db: Database,
    path: PathBuf,
    /// Per store read so far since the last write: its table (`None`: it does not exist).
    tables: RefCell<Vec<(String, Option<ReadTable>)>>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn table_name(store: &str) -> String {
    format!("s:{store}")
}

fn storage(path: &Path, error: impl std::fmt::Display) -> StateError {
    StateError::Storage(format!("{}: {error}", path.display()))
}

impl LocalStore {
    /// Opens (or creates) the file; a missing directory is created.
    pub(crate) fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(dir, e))?;
        }
        let db = Database::create(path).map_err(|e| storage(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
            tables: RefCell::new(Vec::new()),
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next changelog offset to read for `store` (0 for a store never written).
    pub(crate) fn offset(&self, store: &str) -> Result<u64, StateError> {
        let read = self.db.begin_read().map_err(|e| storage(&self.path, e))?;
        let table = match read.open_table(OFFSETS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(storage(&self.path, e)),
        };
        let offset = table.get(store).map_err(|e| storage(&self.path, e))?;
        Ok(offset.map_or(0, |v| v.value()))
    }

    /// Runs `read` on the table of `store` as of the last commit (`None`: no such table),
    /// opening it if this is the first read of it since the last write.
    fn with_table<T>(
        &self,
        store: &str,
        read: impl FnOnce(Option<&ReadTable>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut tables = self.tables.borrow_mut();
        let position = match tables.iter().position(|(name, _)| name == store) {
            Some(position) => position,
            None => {
                let txn = self.db.begin_read().map_err(|e| storage(&self.path, e))?;
                let name = table_name(store);
                let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                let table = match txn.open_table(definition) {
                    Ok(table) => Some(table),
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(storage(&self.path, e)),
                };
                tables.push((store.to_string(), table));
                tables.len() - 1
            }
        };
        read(tables.get(position).and_then(|(_, table)| table.as_ref()))
    }

    /// The value of `key` in `store`.
    pub(crate) fn get(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.with_table(store, |table| {
            let Some(table) = table else {
                return Ok(None);
            };
            let value = table.get(key).map_err(|e| storage(&self.path, e))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    /// The entries of `store` with keys in `range`, in key order, at most `limit` of them.
    pub(crate) fn range(
        &self,
        store: &str,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
    ) -> Result<Vec<super::Entry>, StateError> {
        self.with_table(store, |table| {
            let Some(table) = table else {
                return Ok(Vec::new());
            };
            let mut entries = Vec::new();
            for entry in table
                .range::<&[u8]>(range)
                .map_err(|e| storage(&self.path, e))?
            {
                if entries.len() >= limit {
                    break;
                }
                let (key, value) = entry.map_err(|e| storage(&self.path, e))?;
                entries.push((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(entries)
        })
    }

    /// Entries per store, for the metrics and `kstage state inspect`.
    pub(crate) fn sizes(&self) -> Result<BTreeMap<String, u64>, StateError> {
        let read = self.db.begin_read().map_err(|e| storage(&self.path, e))?;
        let mut sizes = BTreeMap::new();
        for handle in read.list_tables().map_err(|e| storage(&self.path, e))? {
            let Some(store) = handle.name().strip_prefix("s:") else {
                continue;
            };
            let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(handle.name());
            let table = read
                .open_table(definition)
                .map_err(|e| storage(&self.path, e))?;
            sizes.insert(
                store.to_string(),
                table.len().map_err(|e| storage(&self.path, e))?,
            );
        }
        Ok(sizes)
    }

    /// Applies writes of several stores and sets their offsets, in one atomic, durable commit.
    /// A store with an offset of `None` keeps the offset it had.
    pub(crate) fn apply<'w>(
        &self,
        writes: impl IntoIterator<Item = (&'w str, &'w Writes, Option<u64>)>,
    ) -> Result<(), StateError> {
        // The read tables hold the last commit: drop them before it is superseded.
        self.tables.borrow_mut().clear();
        let txn = self.db.begin_write().map_err(|e| storage(&self.path, e))?;
        {
            let mut offsets = txn
                .open_table(OFFSETS)
                .map_err(|e| storage(&self.path, e))?;
            for (store, writes, offset) in writes {
                let name = table_name(store);
                let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                let mut table = txn
                    .open_table(definition)
                    .map_err(|e| storage(&self.path, e))?;
                for (key, value) in writes {
                    match value {
                        Some(value) => table.insert(key.as_slice(), value.as_slice()),
                        None => table.remove(key.as_slice()),
                    }
                    .map_err(|e| storage(&self.path, e))?;
                }
                if let Some(offset) = offset {
                    offsets
                        .insert(store, offset)
                        .map_err(|e| storage(&self.path, e))?;
                }
            }
        }
        txn.commit().map_err(|e| storage(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(entries: &[(&str, Option<&str>)]) -> Writes {
        entries
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn applied_writes_and_their_offset_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p-0.redb");
        let store = LocalStore::open(&path).expect("open");
        assert_eq!(store.offset("counts").expect("offset"), 0);
        let first = writes(&[("a", Some("1")), ("b", Some("2"))]);
        store.apply([("counts", &first, Some(7))]).expect("apply");
        let second = writes(&[("a", None), ("c", Some("3"))]);
        store.apply([("counts", &second, None)]).expect("apply");
        drop(store);
        let store = LocalStore::open(&path).expect("reopen");
        assert_eq!(store.offset("counts").expect("offset"), 7);
        assert_eq!(store.get("counts", b"a").expect("get"), None);
        assert_eq!(store.get("counts", b"c").expect("get"), Some(b"3".to_vec()));
        let all = store
            .range("counts", (Bound::Unbounded, Bound::Unbounded), usize::MAX)
            .expect("range");
        assert_eq!(
            all,
            vec![
                (b"b".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
        assert_eq!(store.sizes().expect("sizes").get("counts"), Some(&2));
    }
}
