//! The embedded store (SQLite) that makes deployments outlive a restart: what was asked for, the
//! replica count, and cumulative usage. Every change is one transaction with `synchronous = FULL`,
//! so a crash leaves either the old row or the new one, never half of either.

use super::spec::{DeploymentRequest, Origin};
use super::usage::UsageSnapshot;
use anyhow::{Context, Result};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::Mutex;

/// One deployment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeployment {
    pub id: String,
    pub meta_key: String,
    pub name: String,
    pub origin: Origin,
    pub request: DeploymentRequest,
    pub replicas: usize,
    pub created: u64,
    pub usage: UsageSnapshot,
}

/// Calls are short (a row or two) and rare (management calls, a usage save every few seconds), so
/// they run inline under a mutex rather than on a pool of their own.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deployments (
    instance_id TEXT PRIMARY KEY,
    meta_key    TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL UNIQUE,
    origin      TEXT NOT NULL CHECK (origin IN ('api', 'config')),
    request     TEXT NOT NULL,
    replicas    INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    usage       TEXT NOT NULL DEFAULT '{}'
);
";

impl Store {
    /// Opens (or creates) `wick.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create data dir {}", dir.display()))?;
        let path = dir.join("wick.db");
        let conn = Connection::open(&path).with_context(|| format!("open {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA).with_context(|| format!("create tables in {}", path.display()))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn all(&self) -> Result<Vec<StoredDeployment>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT instance_id, meta_key, name, origin, request, replicas, created, usage
             FROM deployments ORDER BY created, rowid",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, meta_key, name, origin, request, replicas, created, usage) = row?;
            out.push(StoredDeployment {
                origin: if origin == "config" { Origin::Config } else { Origin::Api },
                request: serde_json::from_str(&request).with_context(|| format!("stored deployment {id}"))?,
                usage: serde_json::from_str(&usage).unwrap_or_default(),
                replicas: replicas.max(1) as usize,
                created: created.max(0) as u64,
                id,
                meta_key,
                name,
            });
        }
        Ok(out)
    }

    /// Adds a deployment, or replaces the one with the same id (a config deployment restated).
    pub fn put(&self, d: &StoredDeployment) -> Result<()> {
        let request = serde_json::to_string(&d.request)?;
        let usage = serde_json::to_string(&d.usage)?;
        self.conn().execute(
            "INSERT INTO deployments (instance_id, meta_key, name, origin, request, replicas, created, usage)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (instance_id) DO UPDATE SET meta_key = ?2, name = ?3, origin = ?4, request = ?5,
                 replicas = ?6",
            params![d.id, d.meta_key, d.name, d.origin.as_str(), request, d.replicas as i64, d.created as i64, usage],
        )?;
        Ok(())
    }

    pub fn set_replicas(&self, id: &str, replicas: usize) -> Result<()> {
        self.conn()
            .execute("UPDATE deployments SET replicas = ?2 WHERE instance_id = ?1", params![id, replicas as i64])?;
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        self.conn().execute("DELETE FROM deployments WHERE instance_id = ?1", params![id])?;
        Ok(())
    }

    /// Saves every deployment's usage in one transaction.
    pub fn save_usage(&self, usage: &[(String, UsageSnapshot)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (id, u) in usage {
            tx.execute(
                "UPDATE deployments SET usage = ?2 WHERE instance_id = ?1",
                params![id, serde_json::to_string(u)?],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: &str) -> StoredDeployment {
        StoredDeployment {
            id: id.into(),
            meta_key: key.into(),
            name: format!("name-{key}"),
            origin: Origin::Api,
            request: DeploymentRequest { model: "m".into(), custom_meta_key: Some(key.into()), ..Default::default() },
            replicas: 2,
            created: 7,
            usage: UsageSnapshot::default(),
        }
    }

    #[test]
    fn rows_survive_reopening_and_keys_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(&row("a", "ka")).unwrap();
            s.put(&row("b", "kb")).unwrap();
            assert!(s.put(&row("c", "ka")).is_err(), "meta keys are unique");
            s.set_replicas("a", 3).unwrap();
            let usage = UsageSnapshot { requests: 4, completion_tokens: 9, ..Default::default() };
            s.save_usage(&[("a".into(), usage)]).unwrap();
            s.delete("b").unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let all = s.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].replicas, all[0].usage.requests, all[0].usage.completion_tokens), (3, 4, 9));
        assert_eq!(all[0].meta_key, "ka");
    }
}
