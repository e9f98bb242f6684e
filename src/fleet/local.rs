//! The local copy's bookmark: which etcd cluster and prefix it came from, and the
//! revision it reflects. The shared state itself lives in the ordinary stores (tenant
//! stores under `cluster/` in the state directory, `overrides.json`); this file is
//! written after them, so after a crash it is never ahead of what they hold, and
//! catching up from it replays at most changes already applied (which are absolute, so
//! applying them twice changes nothing).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub cluster_id: String,
    pub prefix: String,
    pub revision: i64,
}

#[derive(Clone)]
pub struct LocalCopy {
    dir: PathBuf,
    applied: Arc<Mutex<Option<Applied>>>,
}

impl LocalCopy {
    /// Opens (creating) `STATE_DIR/cluster` and reads the bookmark; an unreadable
    /// bookmark means "resync in full", never a failure to start.
    pub fn open(state_dir: &Path) -> Result<LocalCopy, String> {
        let dir = dir(state_dir);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let applied = match fs::read(dir.join("applied.json")) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(applied) => Some(applied),
                Err(error) => {
                    tracing::warn!(%error, dir = %dir.display(), "unreadable cluster bookmark; resyncing from etcd in full");
                    None
                }
            },
            Err(_) => None,
        };
        Ok(LocalCopy {
            dir,
            applied: Arc::new(Mutex::new(applied)),
        })
    }

    pub fn applied(&self) -> Option<Applied> {
        self.applied.lock().ok().and_then(|a| a.clone())
    }

    /// Writes the bookmark durably (temporary file, fsync, rename, fsync the directory).
    pub fn save(&self, applied: &Applied) -> Result<(), String> {
        let path = self.dir.join("applied.json");
        let tmp = self.dir.join("applied.json.tmp");
        let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let text = serde_json::to_vec(applied).map_err(|e| e.to_string())?;
        let mut file = File::create(&tmp).map_err(err)?;
        file.write_all(&text).map_err(err)?;
        file.sync_all().map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        if let Ok(mut current) = self.applied.lock() {
            *current = Some(applied.clone());
        }
        Ok(())
    }
}

/// Where a fleet node keeps its local copy.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster")
}

/// The local copy of a zone's tenant map (its journal sits beside it).
pub fn tenant_map(state_dir: &Path, zone: &str) -> PathBuf {
    dir(state_dir).join(format!("{zone}.tenants"))
}
