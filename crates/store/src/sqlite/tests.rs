//! The conformance suite (crate::conformance) on a SQLite file in a temporary directory.

use async_trait::async_trait;

use super::SqliteStore;
use crate::conformance::{conformance_suite, Backend};

struct SqliteFile {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Backend for SqliteFile {
    type Store = SqliteStore;
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.dir.path().join("state.db")).unwrap()
    }
}

fn backend() -> Option<SqliteFile> {
    Some(SqliteFile { dir: tempfile::tempdir().unwrap() })
}

conformance_suite!(backend());
