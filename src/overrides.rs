//! Operator overrides of site health (`up`, `down`, `drain`), persisted so that they
//! survive a restart.
//!
//! The file is small JSON (`{"zone": {"site": "drain"}}`), rewritten atomically on every
//! change: write a temporary file, fsync it, rename it over the old one, fsync the
//! directory. Nothing here is on the query path.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Override {
    Up,
    Down,
    Drain,
}

/// Zone name (origin without the trailing dot) -> site -> override.
pub type Overrides = BTreeMap<String, BTreeMap<String, Override>>;

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid overrides file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("overrides.json")
}

/// Reads the overrides; a missing file means none.
pub fn load(state_dir: &Path) -> Result<Overrides, OverrideError> {
    let path = file(state_dir);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| OverrideError::Parse { path, source })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::new()),
        Err(source) => Err(OverrideError::Read { path, source }),
    }
}

/// Writes the overrides durably; on error the previous file is intact.
pub fn save(state_dir: &Path, overrides: &Overrides) -> Result<(), OverrideError> {
    let path = file(state_dir);
    let write_err = |source| OverrideError::Write {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(state_dir).map_err(write_err)?;
    let tmp = state_dir.join("overrides.json.tmp");
    let mut text =
        serde_json::to_vec_pretty(overrides).map_err(|e| write_err(std::io::Error::other(e)))?;
    text.push(b'\n');
    let mut f = File::create(&tmp).map_err(write_err)?;
    f.write_all(&text).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    fs::rename(&tmp, &path).map_err(write_err)?;
    // The rename is durable only once the directory entry is.
    File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("geolb-overrides-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(load(&dir).unwrap().is_empty());
        let mut o = Overrides::new();
        o.entry("example.test".into())
            .or_default()
            .insert("ams1".into(), Override::Drain);
        save(&dir, &o).unwrap();
        assert_eq!(load(&dir).unwrap(), o);
        let _ = fs::remove_dir_all(&dir);
    }
}
