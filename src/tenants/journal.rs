//! Durability for one zone's tenant map: the journal, group commit and compaction.
//!
//! This file owns [`TenantStore`]: the map file (`<map>`), its journal
//! (`<map>.journal`) and the scratch files `<map>.tmp` and `<map>.journal.tmp` beside
//! them. It makes a change durable before reporting success, replays the journal over
//! the map at startup, folds the journal back into the map in the background, and
//! reloads hand edits. It must not publish tables anywhere (the caller does, after a
//! successful `apply`), and it must not block async worker threads on file I/O: all
//! journal I/O happens on one dedicated writer thread, and compaction writes the map
//! file on a short-lived thread of its own.
//!
//! Journal format: a sequence of records, each `len: u32 LE`, `crc: u32 LE`, then
//! `len` payload bytes, where `crc` is CRC32 over the four length bytes and the
//! payload. A payload is a version byte (1) followed by entries: `op: u8` (1 = set,
//! 2 = delete), `name_len: u8`, the tenant name, and for a set `shard_len: u8` and
//! the shard name. Shards are stored by name, so a record stays meaningful when the
//! shard list is reordered. All requests committed by one fsync go into one record,
//! so a record is the unit that is either entirely present after a crash or not at
//! all; each `apply` batch lies within exactly one record and is therefore atomic.
//!
//! Torn tails: the bytes after the last completed fsync may hold any mix of written
//! and unwritten pages after a crash. Reading stops at the first record that is
//! incomplete or fails its checksum; if no intact record starts anywhere after it,
//! the rest of the file is a torn tail of a write that was never acknowledged and is
//! truncated away. If an intact record does follow, acknowledged data was damaged,
//! and opening fails rather than silently dropping the later records.
//!
//! Replay is idempotent: every entry sets a tenant to a shard or deletes it, so
//! replaying records that compaction already folded into the map changes nothing.
//! That is what makes every crash point of compaction safe (see `compact_to_file`
//! and `Writer::drop_folded_records`).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::batch::{BatchError, TenantBatch};
use super::map::{MapError, parse_map, write_map};
use super::{ShardIdx, ShardNames, TenantNameError, TenantTable, validate_tenant_name};

/// One change as callers give it: `None` deletes the tenant.
pub type Change = (Box<str>, Option<ShardIdx>);

/// One change as the journal keeps it: shards by name.
type NamedChange = (Box<str>, Option<Box<str>>);

const RECORD_VERSION: u8 = 1;
const OP_SET: u8 = 1;
const OP_DELETE: u8 = 2;
const HEADER_LEN: usize = 8;

/// Largest record payload. Bounds memory when reading a damaged length field and
/// the size of one write; one `apply` batch may not exceed it (about two million
/// changes with short names).
const MAX_PAYLOAD: usize = 64 << 20;

/// Errors of [`TenantStore`]. Messages name the file and what failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TenantStoreError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: Arc<io::Error>,
    },
    #[error("tenant map has errors:\n{}", join_map_errors(.0))]
    Map(Vec<MapError>),
    #[error(
        "corrupt journal {} at byte {offset}: {reason}; refusing to start because \
         records after it would be lost (move the journal aside to start from the map \
         file alone)",
        path.display()
    )]
    CorruptJournal {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("journal {} is locked by another process using the same tenant map", path.display())]
    Locked { path: PathBuf },
    #[error("invalid tenant name {name:?}: {reason}")]
    InvalidTenant {
        name: String,
        reason: TenantNameError,
    },
    #[error("tenant {tenant}: shard index {} is not a configured shard", idx.0)]
    UnknownShard { tenant: String, idx: ShardIdx },
    #[error("unknown shard \"{shard}\" for tenant {tenant} (known: {known})")]
    UnknownShardName {
        tenant: String,
        shard: String,
        known: String,
    },
    #[error("a batch of {changes} changes is too large for one journal record")]
    BatchTooLarge { changes: usize },
    #[error("{0}")]
    Batch(BatchError),
    #[error(
        "journal {} is unusable after an earlier write failure; restart to recover \
         (changes that failed may or may not have been saved)",
        path.display()
    )]
    Failed { path: PathBuf },
    #[error(
        "tenant map {} changed on disk since it was loaded; reload it (SIGHUP) so \
         geolb can fold its journal into it",
        path.display()
    )]
    MapChangedOnDisk { path: PathBuf },
    #[error("tenant store for {} has stopped", path.display())]
    Stopped { path: PathBuf },
}

fn join_map_errors(errors: &[MapError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    lines.join("\n")
}

/// Builds a mapper from `io::Error` to [`TenantStoreError::Io`].
fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TenantStoreError {
    let path = path.to_path_buf();
    move |source| TenantStoreError::Io {
        action,
        path,
        source: Arc::new(source),
    }
}

/// When compaction runs.
#[derive(Debug, Clone)]
pub struct TenantStoreOptions {
    /// Compact this long after the last change (default 5 s).
    pub compact_after_idle: Duration,
    /// Compact as soon as the journal holds this many changes, even while changes
    /// keep arriving (default 50,000), so startup replay stays short.
    pub compact_after_changes: usize,
}

impl Default for TenantStoreOptions {
    fn default() -> Self {
        TenantStoreOptions {
            compact_after_idle: Duration::from_secs(5),
            compact_after_changes: 50_000,
        }
    }
}

/// One zone's tenant map file plus its journal. See the module documentation.
///
/// Dropping the store stops its writer thread after the work already queued, waiting
/// for a compaction in progress to finish; the journal keeps everything acknowledged,
/// so dropping without [`TenantStore::compact_now`] loses nothing.
pub struct TenantStore {
    map_path: PathBuf,
    current: Arc<Mutex<TenantTable>>,
    tx: mpsc::Sender<Msg>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore")
            .field("map_path", &self.map_path)
            .finish_non_exhaustive()
    }
}

enum Msg {
    Apply {
        changes: Vec<Change>,
        reply: oneshot::Sender<Result<TenantTable, TenantStoreError>>,
    },
    ApplyBatch {
        batch: TenantBatch,
        reply: oneshot::Sender<Result<TenantTable, TenantStoreError>>,
    },
    CompactNow {
        reply: oneshot::Sender<Result<(), TenantStoreError>>,
    },
    Reload {
        table: TenantTable,
        shards: ShardNames,
        map_id: FileId,
        reply: mpsc::SyncSender<TenantTable>,
    },
    CompactionDone(CompactionOutcome),
    Shutdown,
}

impl TenantStore {
    /// Opens the store with default options; see [`TenantStore::open_with`].
    pub fn open(
        map_path: &Path,
        shards: &ShardNames,
    ) -> Result<(TenantStore, TenantTable), TenantStoreError> {
        TenantStore::open_with(map_path, shards, TenantStoreOptions::default())
    }

    /// Parses the map file, replays the journal over it and returns the current table.
    ///
    /// The map file must exist (it may be empty). A torn journal tail is truncated; a
    /// damaged record followed by intact ones is an error. Journal entries that name a
    /// shard not in `shards` are skipped with a warning listing them: the operator
    /// removed that shard, the entries cannot be edited by hand, and failing to start
    /// would leave no way out. Those tenants keep what the map file (or an earlier
    /// entry) says, and the skipped entries disappear at the next compaction.
    ///
    /// This does blocking file I/O; call it before serving or on a blocking thread.
    pub fn open_with(
        map_path: &Path,
        shards: &ShardNames,
        options: TenantStoreOptions,
    ) -> Result<(TenantStore, TenantTable), TenantStoreError> {
        let map_path = map_path.to_path_buf();
        let journal_path = sibling(&map_path, ".journal");
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&journal_path)
            .map_err(io_err("cannot open journal", &journal_path))?;
        lock(&journal, &journal_path)?;
        // A journal created just now must have a durable directory entry before any
        // record in it is acknowledged.
        sync_dir(&map_path)?;
        // Scratch files left by a crash are never the only copy of anything.
        for stale in [
            sibling(&map_path, ".tmp"),
            sibling(&map_path, ".journal.tmp"),
        ] {
            match fs::remove_file(&stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("cannot remove stale", &stale)(e));
                }
                _ => {}
            }
        }

        let (table, map_id) = match load_map(&map_path, shards) {
            Ok(loaded) => loaded,
            Err(LoadError::Io(e)) => return Err(io_err("cannot read tenant map", &map_path)(e)),
            Err(LoadError::Map(errors)) => return Err(TenantStoreError::Map(errors)),
        };

        let mut bytes = Vec::new();
        (&journal)
            .read_to_end(&mut bytes)
            .map_err(io_err("cannot read journal", &journal_path))?;
        let scanned =
            scan_journal(&bytes).map_err(|(offset, reason)| TenantStoreError::CorruptJournal {
                path: journal_path.clone(),
                offset,
                reason,
            })?;
        if scanned.valid_len < bytes.len() {
            tracing::warn!(
                journal = %journal_path.display(),
                offset = scanned.valid_len,
                bytes = bytes.len() - scanned.valid_len,
                "dropping the torn tail of the journal (a write interrupted by a crash, never acknowledged)"
            );
            journal
                .set_len(scanned.valid_len as u64)
                .and_then(|()| journal.sync_all())
                .map_err(io_err(
                    "cannot truncate torn tail of journal",
                    &journal_path,
                ))?;
        }
        let journal_len = scanned.valid_len as u64;
        let mut records = VecDeque::with_capacity(scanned.records.len());
        let mut changes_in_journal = 0;
        for (seq, (start, end, changes)) in (1u64..).zip(&scanned.records) {
            let (start, end) = (*start, *end);
            changes_in_journal += changes.len();
            records.push_back(Record {
                seq,
                start,
                end,
                n_changes: changes.len(),
            });
        }
        let next_seq = records.back().map_or(1, |r| r.seq + 1);
        let (changes, skipped) = resolve(
            scanned
                .records
                .iter()
                .flat_map(|(_, _, changes)| changes.iter()),
            shards,
        );
        warn_skipped(&journal_path, &skipped);
        let table = table.with_changes(&changes);
        if !records.is_empty() {
            tracing::info!(
                journal = %journal_path.display(),
                records = records.len(),
                changes = changes_in_journal,
                "replayed journal over the tenant map"
            );
        }

        let current = Arc::new(Mutex::new(table.clone()));
        let (tx, rx) = mpsc::channel();
        let compact_at = (!records.is_empty()).then(|| Instant::now() + options.compact_after_idle);
        let writer = Writer {
            map_path: map_path.clone(),
            journal_path: journal_path.clone(),
            shared_current: Arc::clone(&current),
            rx,
            tx: tx.clone(),
            options,
            journal,
            journal_len,
            shards: shards.clone(),
            current: table.clone(),
            records,
            changes_in_journal,
            next_seq,
            folded_seq: 0,
            map_id,
            map_changed: false,
            compaction: None,
            compact_at,
            force_compaction: false,
            waiters: Vec::new(),
            failed: false,
        };
        let handle = thread::Builder::new()
            .name("geolb-tenants".into())
            .spawn(move || writer.run())
            .map_err(io_err("cannot start the writer thread for", &journal_path))?;
        Ok((
            TenantStore {
                map_path,
                current,
                tx,
                writer: Some(handle),
            },
            table,
        ))
    }

    /// The map file this store owns.
    pub fn map_path(&self) -> &Path {
        &self.map_path
    }

    /// The latest table: the source of truth for the next change.
    pub fn current(&self) -> TenantTable {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Applies a batch of changes atomically and durably, in order (`None` deletes).
    ///
    /// Names are validated and lower-cased here; shard indexes refer to the
    /// [`ShardNames`] of the last `open` or `reload`. The batch is appended to the
    /// journal as part of one record and fsynced before this returns `Ok`, so the
    /// caller may acknowledge it then. Concurrent calls share fsyncs (group commit).
    /// The returned table contains this batch and everything committed before it
    /// (possibly also batches committed in the same fsync); its version orders it
    /// against tables returned to other callers.
    ///
    /// An `Err` other than a validation error means the outcome is unknown: the change
    /// may or may not survive a restart. Retrying is safe, because changes are
    /// idempotent. Dropping the returned future does not cancel a change that was
    /// already handed to the writer.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<TenantTable, TenantStoreError> {
        let mut changes = changes;
        normalize_names(changes.iter_mut().map(|(name, _)| name))?;
        if changes.is_empty() {
            return Ok(self.current());
        }
        self.ask(|reply| Msg::Apply { changes, reply }).await
    }

    /// Like [`TenantStore::apply`], with shards given by name (`None` deletes).
    ///
    /// Names are resolved on the writer thread against the shard list in force when
    /// the batch is written, so a concurrent [`TenantStore::reload`] that reorders or
    /// removes shards can never make a change land on another shard than the one
    /// named. A name that is not configured fails the whole batch with
    /// [`TenantStoreError::UnknownShardName`], and nothing of it is written.
    pub async fn apply_named(
        &self,
        changes: Vec<(Box<str>, Option<Box<str>>)>,
    ) -> Result<TenantTable, TenantStoreError> {
        let mut batch = TenantBatch::with_capacity(changes.len(), 0);
        for (tenant, shard) in &changes {
            batch.push(tenant, shard.as_deref()).map_err(batch_error)?;
        }
        self.apply_batch(batch).await
    }

    /// Like [`TenantStore::apply_named`], for a batch already held compactly; this is
    /// how a large batch stays within a small multiple of its text in memory.
    pub async fn apply_batch(&self, batch: TenantBatch) -> Result<TenantTable, TenantStoreError> {
        if batch.is_empty() {
            return Ok(self.current());
        }
        self.ask(|reply| Msg::ApplyBatch { batch, reply }).await
    }

    /// Sends the writer a message carrying a reply channel and waits for the reply.
    async fn ask<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<Result<T, TenantStoreError>>) -> Msg,
    ) -> Result<T, TenantStoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(message(reply)).map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Folds the journal into the map file now and waits for it: afterwards the map
    /// file holds every change acknowledged before the call, and the journal holds at
    /// most changes made since. Fails with [`TenantStoreError::MapChangedOnDisk`] if
    /// the map was edited by hand and not reloaded yet.
    pub async fn compact_now(&self) -> Result<(), TenantStoreError> {
        self.ask(|reply| Msg::CompactNow { reply }).await
    }

    /// Re-reads the map file after a hand edit and returns the new current table.
    ///
    /// The file is authoritative for what it says as of the reload; journal records
    /// not yet folded into it (changes acknowledged since the last compaction) are
    /// re-applied on top, because they were acknowledged to API clients and a restart
    /// would apply them the same way. `shards` replaces the shard list; pending
    /// entries naming a shard no longer listed are skipped with a warning, as in
    /// `open`. On errors the current table stays as it was and every error is
    /// returned. Blocking: it reads and parses the whole file, so call it from a
    /// blocking thread.
    pub fn reload(&self, shards: &ShardNames) -> Result<TenantTable, Vec<MapError>> {
        let whole_file = |message: String| {
            vec![MapError {
                file: self.map_path.clone(),
                line: 0,
                key: String::new(),
                message,
            }]
        };
        let (table, map_id) = load_map(&self.map_path, shards).map_err(|e| match e {
            LoadError::Io(e) => whole_file(format!("cannot read tenant map: {e}")),
            LoadError::Map(errors) => errors,
        })?;
        let (reply, answer) = mpsc::sync_channel(1);
        let msg = Msg::Reload {
            table,
            shards: shards.clone(),
            map_id,
            reply,
        };
        let stopped =
            || whole_file("the tenant store has stopped; the map was not reloaded".into());
        self.tx.send(msg).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())
    }

    fn stopped(&self) -> TenantStoreError {
        TenantStoreError::Stopped {
            path: self.map_path.clone(),
        }
    }
}

impl Drop for TenantStore {
    fn drop(&mut self) {
        // The writer finishes what is queued, waits for a running compaction, then
        // closes the journal (releasing its lock) before the join returns.
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Validates tenant names and lower-cases them in place.
fn normalize_names<'a>(
    names: impl Iterator<Item = &'a mut Box<str>>,
) -> Result<(), TenantStoreError> {
    for name in names {
        if let Err(reason) = validate_tenant_name(name) {
            return Err(TenantStoreError::InvalidTenant {
                name: name.to_string(),
                reason,
            });
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            *name = name.to_ascii_lowercase().into_boxed_str();
        }
    }
    Ok(())
}

fn batch_error(e: BatchError) -> TenantStoreError {
    match e {
        BatchError::Tenant { name, reason } => TenantStoreError::InvalidTenant { name, reason },
        other => TenantStoreError::Batch(other),
    }
}

/// Resolves a batch's shard names against `shards`, failing on the first unknown one
/// (named with the first tenant sent there).
fn resolve_batch(
    batch: &TenantBatch,
    shards: &ShardNames,
) -> Result<Vec<ShardIdx>, TenantStoreError> {
    let mut out = Vec::with_capacity(batch.shard_names().len());
    for (i, name) in batch.shard_names().iter().enumerate() {
        let Some(idx) = shards.idx(name) else {
            let tenant = batch
                .iter_indexed()
                .find(|(_, s)| s.map(usize::from) == Some(i))
                .map_or("", |(t, _)| t);
            return Err(TenantStoreError::UnknownShardName {
                tenant: tenant.to_string(),
                shard: name.to_string(),
                known: shards.joined(),
            });
        };
        out.push(idx);
    }
    Ok(out)
}

/// The batch of already normalized, index-based changes, with shards by name.
fn batch_of(changes: &[Change], shards: &ShardNames) -> Result<TenantBatch, TenantStoreError> {
    let bytes = changes.iter().map(|(n, _)| n.len()).sum();
    let mut batch = TenantBatch::with_capacity(changes.len(), bytes);
    for (name, shard) in changes {
        let shard = match shard {
            None => None,
            Some(idx) => Some(
                shards
                    .name(*idx)
                    .ok_or_else(|| TenantStoreError::UnknownShard {
                        tenant: name.to_string(),
                        idx: *idx,
                    })?,
            ),
        };
        batch.push(name, shard).map_err(batch_error)?;
    }
    Ok(batch)
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Fsyncs the directory holding `path`, making renames and new files in it durable.
fn sync_dir(path: &Path) -> Result<(), TenantStoreError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot fsync directory", dir))
}

/// Takes the advisory lock that keeps two processes from appending to one journal.
fn lock(file: &File, path: &Path) -> Result<(), TenantStoreError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(TenantStoreError::Locked {
            path: path.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io_err("cannot lock journal", path)(e)),
    }
}

/// Identity of the map file as geolb last read or wrote it. A rename keeps the
/// inode and modification time, so our own compaction does not look like an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

enum LoadError {
    Io(io::Error),
    Map(Vec<MapError>),
}

/// Reads and parses the map file. The identity comes from the same open file, taken
/// before reading, so an edit racing with the read makes the identity stale (which
/// postpones compaction) rather than hiding the edit.
fn load_map(path: &Path, shards: &ShardNames) -> Result<(TenantTable, FileId), LoadError> {
    let file = File::open(path).map_err(LoadError::Io)?;
    let id = FileId::of(&file.metadata().map_err(LoadError::Io)?);
    let mut bytes = Vec::with_capacity(usize::try_from(id.len).unwrap_or(0));
    (&file).read_to_end(&mut bytes).map_err(LoadError::Io)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..bad].iter().filter(|&&b| b == b'\n').count() + 1;
        LoadError::Map(vec![MapError {
            file: path.to_path_buf(),
            line,
            key: String::new(),
            message: "the file is not valid UTF-8".into(),
        }])
    })?;
    let table = parse_map(path, &text, shards).map_err(LoadError::Map)?;
    Ok((table, id))
}

/// Maps journal entries onto `shards`; returns the changes and the skipped entries
/// (as `tenant -> shard`) whose shard is not configured.
fn resolve<'a>(
    entries: impl Iterator<Item = &'a NamedChange>,
    shards: &ShardNames,
) -> (Vec<Change>, Vec<String>) {
    let mut changes = Vec::new();
    let mut skipped = Vec::new();
    for (name, shard) in entries {
        match shard {
            None => changes.push((name.clone(), None)),
            Some(shard) => match shards.idx(shard) {
                Some(idx) => changes.push((name.clone(), Some(idx))),
                None => skipped.push(format!("{name} -> {shard}")),
            },
        }
    }
    (changes, skipped)
}

fn warn_skipped(journal: &Path, skipped: &[String]) {
    if !skipped.is_empty() {
        tracing::warn!(
            journal = %journal.display(),
            entries = %skipped.join(", "),
            "skipping journal entries that name shards no longer configured; those tenants keep their previous shard"
        );
    }
}

/// Appends a batch's entries (without the version byte) to `out`.
fn encode_batch(batch: &TenantBatch, out: &mut Vec<u8>) {
    for (name, shard) in batch.iter() {
        // Names were validated when pushed, so they fit in the one-byte length;
        // configured shard names are at most 255 bytes (and only configured ones get
        // here, after `resolve_batch`).
        let name_len = name.len() as u8;
        match shard {
            None => out.extend_from_slice(&[OP_DELETE, name_len]),
            Some(_) => out.extend_from_slice(&[OP_SET, name_len]),
        }
        out.extend_from_slice(name.as_bytes());
        if let Some(shard) = shard {
            out.push(shard.len().min(255) as u8);
            out.extend_from_slice(&shard.as_bytes()[..shard.len().min(255)]);
        }
    }
}

/// The encoded size of a batch's entries.
fn encoded_len(batch: &TenantBatch) -> usize {
    batch
        .iter()
        .map(|(name, shard)| 2 + name.len() + shard.map_or(0, |s| 1 + s.len()))
        .sum()
}

fn record_crc(payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A complete record: header plus payload (which starts with the version byte).
#[cfg(test)]
fn encode_record(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN];
    out.extend_from_slice(payload);
    seal_record(&mut out);
    out
}

/// Fills in the header of a record built in place: `HEADER_LEN` bytes of room, then
/// the payload. Building in place keeps one copy of a large batch's record, not two.
fn seal_record(record: &mut [u8]) {
    let Some((header, payload)) = record.split_at_mut_checked(HEADER_LEN) else {
        return;
    };
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&record_crc(payload).to_le_bytes());
}

/// The payload range of an intact record starting at `at`, if there is one.
fn record_at(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let header = bytes.get(at..at.checked_add(HEADER_LEN)?)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let start = at + HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (record_crc(payload) == crc).then_some((start, start + len))
}

fn decode_payload(payload: &[u8]) -> Result<Vec<NamedChange>, String> {
    let (&version, mut rest) = payload
        .split_first()
        .ok_or_else(|| "empty record".to_string())?;
    if version != RECORD_VERSION {
        return Err(format!("unsupported record version {version}"));
    }
    let mut out = Vec::new();
    let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if rest.len() < n {
            return Err("record ends inside an entry".into());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    while !rest.is_empty() {
        let head = take(&mut rest, 2)?;
        let (op, name_len) = (head[0], usize::from(head[1]));
        let name = String::from_utf8(take(&mut rest, name_len)?)
            .map_err(|_| "tenant name is not UTF-8".to_string())?;
        if validate_tenant_name(&name).is_err() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("invalid tenant name {name:?}"));
        }
        let shard = match op {
            OP_DELETE => None,
            OP_SET => {
                let len = usize::from(take(&mut rest, 1)?[0]);
                let shard = String::from_utf8(take(&mut rest, len)?)
                    .map_err(|_| "shard name is not UTF-8".to_string())?;
                if shard.is_empty() {
                    return Err(format!("empty shard name for tenant {name}"));
                }
                Some(shard.into_boxed_str())
            }
            other => return Err(format!("unknown operation {other}")),
        };
        out.push((name.into_boxed_str(), shard));
    }
    Ok(out)
}

struct Scanned {
    /// (start, end, entries) of each intact record.
    records: Vec<(u64, u64, Vec<NamedChange>)>,
    /// Length of the intact prefix; anything after it is a torn tail.
    valid_len: usize,
}

/// Reads all records; `Err((offset, reason))` for damage that is not a torn tail.
fn scan_journal(bytes: &[u8]) -> Result<Scanned, (u64, String)> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some((start, end)) = record_at(bytes, at) else {
            // A torn tail only if no intact record starts anywhere after this point.
            // Damaged lengths are rejected cheaply, so this scan is linear in practice.
            if let Some(later) = (at + 1..bytes.len()).find(|&p| record_at(bytes, p).is_some()) {
                return Err((
                    at as u64,
                    format!("record is damaged but an intact record follows at byte {later}"),
                ));
            }
            return Ok(Scanned {
                records,
                valid_len: at,
            });
        };
        let changes = decode_payload(&bytes[start..end]).map_err(|reason| (at as u64, reason))?;
        records.push((at as u64, end as u64, changes));
        at = end;
    }
    Ok(Scanned {
        records,
        valid_len: at,
    })
}

/// A journal record that is not yet folded into the map file. Its changes stay in the
/// file only (a reload reads them back), so a large batch costs no memory once written.
struct Record {
    seq: u64,
    start: u64,
    end: u64,
    n_changes: usize,
}

struct CompactionOutcome {
    upto: u64,
    expected: FileId,
    /// The new map's identity once it replaced the old one, even if the directory
    /// fsync then failed.
    new_id: Option<FileId>,
    result: Result<(), TenantStoreError>,
}

struct InFlight {
    upto: u64,
    thread: JoinHandle<()>,
    /// A reload happened while this compaction ran, so what it wrote may predate it.
    reloaded: bool,
}

struct ApplyRequest {
    batch: TenantBatch,
    /// The batch's shard names resolved against the writer's shard list.
    shards: Vec<ShardIdx>,
    reply: oneshot::Sender<Result<TenantTable, TenantStoreError>>,
}

/// The state owned by the writer thread.
struct Writer {
    map_path: PathBuf,
    journal_path: PathBuf,
    shared_current: Arc<Mutex<TenantTable>>,
    rx: mpsc::Receiver<Msg>,
    /// Handed to compaction threads to report back.
    tx: mpsc::Sender<Msg>,
    options: TenantStoreOptions,
    journal: File,
    journal_len: u64,
    shards: ShardNames,
    current: TenantTable,
    /// Every record in the journal file, oldest first.
    records: VecDeque<Record>,
    changes_in_journal: usize,
    next_seq: u64,
    /// Records up to this sequence number are in the map file.
    folded_seq: u64,
    map_id: FileId,
    /// Compaction found the map edited by hand; it waits for a reload.
    map_changed: bool,
    compaction: Option<InFlight>,
    compact_at: Option<Instant>,
    /// The in-memory table differs from the map file even with no records pending.
    force_compaction: bool,
    /// `compact_now` callers and the sequence number they need folded.
    waiters: Vec<(u64, oneshot::Sender<Result<(), TenantStoreError>>)>,
    /// An fsync or truncation failed; the journal's state is unknown.
    failed: bool,
}

impl Writer {
    fn run(mut self) {
        let mut stopping = false;
        loop {
            if stopping && self.compaction.is_none() {
                break;
            }
            let deadline = if stopping { None } else { self.compact_at };
            let first = match deadline {
                Some(at) => match self
                    .rx
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(msg) => msg,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.compact_at = None;
                        self.start_compaction();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            // Everything that queued up while the last fsync ran is handled now, and
            // consecutive applies share one record and one fsync. Other messages keep
            // their place in the order.
            let queued: Vec<Msg> = std::iter::once(first).chain(self.rx.try_iter()).collect();
            let mut group = Vec::new();
            for msg in queued {
                match msg {
                    Msg::Apply { changes, reply } => match batch_of(&changes, &self.shards) {
                        Ok(batch) => self.queue(&mut group, batch, reply),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                    Msg::ApplyBatch { batch, reply } => self.queue(&mut group, batch, reply),
                    other => {
                        self.commit(std::mem::take(&mut group));
                        match other {
                            Msg::Apply { .. } | Msg::ApplyBatch { .. } => {}
                            Msg::CompactNow { reply } => self.compact_now(reply),
                            Msg::Reload {
                                table,
                                shards,
                                map_id,
                                reply,
                            } => {
                                let table = self.reload(table, shards, map_id);
                                let _ = reply.send(table);
                            }
                            Msg::CompactionDone(outcome) => self.compaction_done(outcome),
                            Msg::Shutdown => stopping = true,
                        }
                    }
                }
            }
            self.commit(group);
        }
    }

    /// Resolves a batch's shards against the shards in force now (a reload queued
    /// before it has already replaced them) and adds it to the group to commit.
    fn queue(
        &self,
        group: &mut Vec<ApplyRequest>,
        batch: TenantBatch,
        reply: oneshot::Sender<Result<TenantTable, TenantStoreError>>,
    ) {
        match resolve_batch(&batch, &self.shards) {
            Ok(shards) => group.push(ApplyRequest {
                batch,
                shards,
                reply,
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn set_current(&mut self, table: TenantTable) {
        *self
            .shared_current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = table.clone();
        self.current = table;
    }

    fn failed_error(&self) -> TenantStoreError {
        TenantStoreError::Failed {
            path: self.journal_path.clone(),
        }
    }

    /// Writes a group of apply requests as few records as possible (one, unless it
    /// exceeds the record size limit), fsyncing after each.
    fn commit(&mut self, group: Vec<ApplyRequest>) {
        if group.is_empty() {
            return;
        }
        let new_record = || {
            let mut record = vec![0u8; HEADER_LEN];
            record.push(RECORD_VERSION);
            record
        };
        let mut record = new_record();
        let mut batch = Vec::new();
        for request in group {
            let len = encoded_len(&request.batch);
            if len + 1 > MAX_PAYLOAD {
                let changes = request.batch.len();
                let _ = request
                    .reply
                    .send(Err(TenantStoreError::BatchTooLarge { changes }));
                continue;
            }
            if record.len() - HEADER_LEN + len > MAX_PAYLOAD {
                self.write_record(
                    std::mem::replace(&mut record, new_record()),
                    std::mem::take(&mut batch),
                );
            }
            record.reserve_exact(len);
            encode_batch(&request.batch, &mut record);
            batch.push(request);
        }
        if !batch.is_empty() {
            self.write_record(record, batch);
        }
    }

    /// Writes `record` (header room, then the payload) and fsyncs it; then serves the
    /// batches in it. The record's bytes are freed before the new table is built, so
    /// a large batch never holds both at once.
    fn write_record(&mut self, mut record: Vec<u8>, batch: Vec<ApplyRequest>) {
        if self.failed {
            for request in batch {
                let _ = request.reply.send(Err(self.failed_error()));
            }
            return;
        }
        seal_record(&mut record);
        let at = self.journal_len;
        let written = self
            .journal
            .write_all_at(&record, at)
            .map_err(io_err("cannot append to journal", &self.journal_path));
        let record_len = record.len() as u64;
        drop(record);
        if let Err(e) = written {
            // Cut off the partial append so the next record starts where the scan
            // expects it; if even that fails, the file's end is unknown.
            if self
                .journal
                .set_len(at)
                .and_then(|()| self.journal.sync_data())
                .is_err()
            {
                self.failed = true;
            }
            tracing::error!(error = %e, "tenant change not saved");
            for request in batch {
                let _ = request.reply.send(Err(e.clone()));
            }
            return;
        }
        if let Err(e) = self.journal.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages while
            // reporting them clean; nothing written since can be trusted.
            self.failed = true;
            let e = io_err("cannot fsync journal", &self.journal_path)(e);
            tracing::error!(error = %e, "tenant journal failed; changes are refused until restart");
            for request in batch {
                let _ = request.reply.send(Err(e.clone()));
            }
            return;
        }
        self.journal_len += record_len;

        let n_changes: usize = batch.iter().map(|r| r.batch.len()).sum();
        let table = self.current.with_changes_iter(batch.iter().flat_map(|r| {
            r.batch.iter_indexed().map(|(name, shard)| {
                (
                    name,
                    shard.and_then(|i| r.shards.get(usize::from(i)).copied()),
                )
            })
        }));
        self.set_current(table.clone());
        self.changes_in_journal += n_changes;
        self.records.push_back(Record {
            seq: self.next_seq,
            start: at,
            end: self.journal_len,
            n_changes,
        });
        self.next_seq += 1;
        for request in batch {
            drop(request.batch);
            let _ = request.reply.send(Ok(table.clone()));
        }
        self.compact_at = Some(Instant::now() + self.options.compact_after_idle);
        if self.changes_in_journal >= self.options.compact_after_changes {
            self.start_compaction();
        }
    }

    fn compact_now(&mut self, reply: oneshot::Sender<Result<(), TenantStoreError>>) {
        let need = self.records.back().map_or(0, |r| r.seq);
        if need <= self.folded_seq && !self.force_compaction {
            let _ = reply.send(Ok(()));
            return;
        }
        self.waiters.push((need, reply));
        self.start_compaction();
    }

    fn answer_waiters(&mut self, folded: u64) {
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(need, _)| *need <= folded);
        self.waiters = rest;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
    }

    fn fail_waiters(&mut self, error: &TenantStoreError) {
        for (_, reply) in self.waiters.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
    }

    fn start_compaction(&mut self) {
        if self.compaction.is_some() {
            return;
        }
        if self.failed {
            let e = self.failed_error();
            self.fail_waiters(&e);
            return;
        }
        let upto = self.records.back().map_or(self.folded_seq, |r| r.seq);
        if upto <= self.folded_seq && !self.force_compaction {
            self.answer_waiters(upto);
            return;
        }
        if self.map_changed {
            let e = TenantStoreError::MapChangedOnDisk {
                path: self.map_path.clone(),
            };
            self.fail_waiters(&e);
            return;
        }
        let map_path = self.map_path.clone();
        let table = self.current.clone();
        let shards = self.shards.clone();
        let expected = self.map_id;
        let tx = self.tx.clone();
        let spawned = thread::Builder::new()
            .name("geolb-tenants-compact".into())
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    compact_to_file(&map_path, &table, &shards, expected, upto)
                }))
                .unwrap_or_else(|_| CompactionOutcome {
                    upto,
                    expected,
                    new_id: None,
                    result: Err(io_err("compaction panicked while writing", &map_path)(
                        io::Error::other("panic"),
                    )),
                });
                let _ = tx.send(Msg::CompactionDone(outcome));
            });
        match spawned {
            Ok(thread) => {
                self.force_compaction = false;
                self.compact_at = None;
                self.compaction = Some(InFlight {
                    upto,
                    thread,
                    reloaded: false,
                });
            }
            Err(e) => {
                let e = io_err("cannot start compaction of", &self.map_path)(e);
                tracing::error!(error = %e, "tenant map compaction postponed");
                self.fail_waiters(&e);
                self.compact_at = Some(Instant::now() + self.options.compact_after_idle);
            }
        }
    }

    fn compaction_done(&mut self, outcome: CompactionOutcome) {
        let Some(in_flight) = self.compaction.take() else {
            return;
        };
        let _ = in_flight.thread.join();
        debug_assert_eq!(in_flight.upto, outcome.upto);
        if let Some(id) = outcome.new_id {
            self.map_id = id;
        }
        match outcome.result {
            Ok(()) => {
                self.folded_seq = outcome.upto;
                self.drop_folded_records(outcome.upto);
                tracing::debug!(map = %self.map_path.display(), "folded the tenant journal into the map");
                self.answer_waiters(outcome.upto);
                if in_flight.reloaded {
                    // The file we wrote may predate a hand edit read by that reload.
                    self.force_compaction = true;
                }
            }
            Err(TenantStoreError::MapChangedOnDisk { .. })
                if in_flight.reloaded || outcome.expected != self.map_id =>
            {
                // A reload read the edited file meanwhile; compact against it.
                self.force_compaction = true;
            }
            Err(e @ TenantStoreError::MapChangedOnDisk { .. }) => {
                self.map_changed = true;
                tracing::warn!(
                    map = %self.map_path.display(),
                    "tenant map was edited on disk and not reloaded; compaction waits for a reload (SIGHUP), API changes stay in the journal"
                );
                self.fail_waiters(&e);
            }
            Err(e) => {
                tracing::error!(error = %e, "tenant map compaction failed; will retry");
                self.fail_waiters(&e);
                self.compact_at = Some(Instant::now() + self.options.compact_after_idle);
                return;
            }
        }
        if self.force_compaction
            || !self.waiters.is_empty()
            || self.changes_in_journal >= self.options.compact_after_changes
        {
            self.start_compaction();
        }
    }

    /// Removes records up to `upto` from the journal, now that the map file holding
    /// them is durable. Records appended while compaction ran are kept.
    fn drop_folded_records(&mut self, upto: u64) {
        let Some(keep) = self.records.iter().position(|r| r.seq > upto) else {
            // Everything is folded: empty the journal in place. A crash before or
            // after the truncation is fine, because the map already holds it all.
            let truncated = self
                .journal
                .set_len(0)
                .and_then(|()| self.journal.sync_all());
            if let Err(e) = truncated {
                // The journal's length is unknown now; appending could leave old bytes
                // after a new record, so stop taking changes.
                self.failed = true;
                let e = io_err("cannot truncate journal", &self.journal_path)(e);
                tracing::error!(error = %e, "tenant journal failed; changes are refused until restart");
                return;
            }
            self.journal_len = 0;
            self.records.clear();
            self.changes_in_journal = 0;
            return;
        };
        let base = self.records[keep].start;
        match self.rewrite_journal(base) {
            Ok(()) => {
                self.records.drain(..keep);
                for r in self.records.iter_mut() {
                    r.start -= base;
                    r.end -= base;
                }
                self.changes_in_journal = self.records.iter().map(|r| r.n_changes).sum();
            }
            Err(e) => {
                // The old journal still holds everything, which is correct, only longer.
                tracing::error!(error = %e, "cannot shorten the tenant journal; it keeps folded records for now");
            }
        }
    }

    /// Replaces the journal with a copy of its bytes from `base` on, via a scratch
    /// file that is fsynced and renamed into place. Until the rename, the old journal
    /// is intact; after it, the new one holds every unfolded record.
    fn rewrite_journal(&mut self, base: u64) -> Result<(), TenantStoreError> {
        let tmp = sibling(&self.map_path, ".journal.tmp");
        let len = usize::try_from(self.journal_len - base).map_err(|_| {
            io_err("journal too large", &self.journal_path)(io::Error::other("length"))
        })?;
        let mut tail = vec![0u8; len];
        self.journal
            .read_exact_at(&mut tail, base)
            .map_err(io_err("cannot read journal", &self.journal_path))?;
        let prepared = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err("cannot create", &tmp))?;
            lock(&file, &tmp)?;
            file.write_all_at(&tail, 0)
                .and_then(|()| file.sync_all())
                .map_err(io_err("cannot write", &tmp))?;
            fs::rename(&tmp, &self.journal_path).map_err(io_err("cannot rename", &tmp))?;
            Ok(file)
        })();
        let file = match prepared {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.journal = file;
        self.journal_len = len as u64;
        if let Err(e) = sync_dir(&self.map_path) {
            // Either journal may come back after a crash; appending to the new one
            // could then lose acknowledged changes, so stop taking them.
            self.failed = true;
            tracing::error!(error = %e, "tenant journal failed; changes are refused until restart");
        }
        Ok(())
    }

    fn reload(&mut self, table: TenantTable, shards: ShardNames, map_id: FileId) -> TenantTable {
        let pending = match self.pending_changes() {
            Ok(pending) => pending,
            Err(e) => {
                // Serving the file without the acknowledged changes on top would undo
                // them; keep serving what we have.
                tracing::error!(error = %e, "cannot read the journal back; the tenant map was not reloaded");
                return self.current.clone();
            }
        };
        let (changes, skipped) = resolve(pending.iter(), &shards);
        warn_skipped(&self.journal_path, &skipped);
        if !changes.is_empty() {
            tracing::info!(
                map = %self.map_path.display(),
                changes = changes.len(),
                "re-applied journaled API changes over the reloaded tenant map"
            );
        }
        let table = table
            .with_changes(&changes)
            .with_version(self.current.version() + 1);
        self.shards = shards;
        self.map_id = map_id;
        self.map_changed = false;
        self.set_current(table.clone());
        if let Some(in_flight) = self.compaction.as_mut() {
            in_flight.reloaded = true;
        }
        if !self.records.is_empty() {
            // Fold the pending changes into the edited file soon, so the file shows
            // what is served.
            self.force_compaction = true;
            self.compact_at = Some(Instant::now() + self.options.compact_after_idle);
        }
        table
    }
}

impl Writer {
    /// The changes of the records not yet folded, read back from the journal file.
    fn pending_changes(&self) -> Result<Vec<NamedChange>, TenantStoreError> {
        let Some(first) = self.records.front() else {
            return Ok(Vec::new());
        };
        let len = usize::try_from(self.journal_len - first.start).map_err(|_| {
            io_err("journal too large", &self.journal_path)(io::Error::other("length"))
        })?;
        let mut bytes = vec![0u8; len];
        self.journal
            .read_exact_at(&mut bytes, first.start)
            .map_err(io_err("cannot read journal", &self.journal_path))?;
        let scanned =
            scan_journal(&bytes).map_err(|(offset, reason)| TenantStoreError::CorruptJournal {
                path: self.journal_path.clone(),
                offset: offset + first.start,
                reason,
            })?;
        Ok(scanned
            .records
            .into_iter()
            .flat_map(|(_, _, changes)| changes)
            .collect())
    }
}

/// Writes `table` to `<map>.tmp`, fsyncs it, renames it over the map and fsyncs the
/// directory. The caller truncates the journal only after this succeeds, so at
/// every crash point either the old map plus the whole journal, or the new map plus
/// (some or all of) the already folded journal, is on disk; both replay to the same
/// table because entries are idempotent.
fn compact_to_file(
    map_path: &Path,
    table: &TenantTable,
    shards: &ShardNames,
    expected: FileId,
    upto: u64,
) -> CompactionOutcome {
    let tmp = sibling(map_path, ".tmp");
    let mut new_id = None;
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
        // Keep the operator's permissions on the file that replaces theirs.
        if let Ok(meta) = fs::metadata(map_path) {
            file.set_permissions(meta.permissions())
                .map_err(io_err("cannot set permissions of", &tmp))?;
        }
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let skipped = write_map(&mut out, table, shards).map_err(io_err("cannot write", &tmp))?;
        if skipped > 0 {
            tracing::warn!(map = %map_path.display(), skipped, "left out tenants whose shard has no name");
        }
        let file = out
            .into_inner()
            .map_err(|e| io_err("cannot write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("cannot fsync", &tmp))?;
        let id = FileId::of(&file.metadata().map_err(io_err("cannot stat", &tmp))?);
        // Never replace a file the operator edited after geolb read it: the edit
        // would be lost. This narrows the window to the instant between this check
        // and the rename.
        let on_disk = fs::metadata(map_path).map_err(io_err("cannot stat tenant map", map_path))?;
        if FileId::of(&on_disk) != expected {
            return Err(TenantStoreError::MapChangedOnDisk {
                path: map_path.to_path_buf(),
            });
        }
        fs::rename(&tmp, map_path).map_err(io_err("cannot rename", &tmp))?;
        new_id = Some(id);
        sync_dir(map_path)
    })();
    if result.is_err() && new_id.is_none() {
        let _ = fs::remove_file(&tmp);
    }
    CompactionOutcome {
        upto,
        expected,
        new_id,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let shards = ShardNames::new(["s1", "s2"]).unwrap();
        let changes = vec![
            (Box::from("acme"), Some(ShardIdx(1))),
            (Box::from("globex"), None),
        ];
        let batch = batch_of(&changes, &shards).unwrap();
        let mut payload = vec![RECORD_VERSION];
        encode_batch(&batch, &mut payload);
        assert_eq!(payload.len(), 1 + encoded_len(&batch));
        let named: Vec<NamedChange> = batch
            .iter()
            .map(|(n, s)| (Box::from(n), s.map(Box::from)))
            .collect();
        let record = encode_record(&payload);
        let scanned = scan_journal(&record).unwrap();
        assert_eq!(scanned.valid_len, record.len());
        assert_eq!(scanned.records.len(), 1);
        assert_eq!(scanned.records[0].2, named);
        assert_eq!(
            named,
            vec![
                (Box::from("acme"), Some(Box::from("s2"))),
                (Box::from("globex"), None)
            ]
        );
    }

    fn record(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut payload = vec![RECORD_VERSION];
        for (name, shard) in entries {
            match shard {
                Some(s) => {
                    payload.extend_from_slice(&[OP_SET, name.len() as u8]);
                    payload.extend_from_slice(name.as_bytes());
                    payload.push(s.len() as u8);
                    payload.extend_from_slice(s.as_bytes());
                }
                None => {
                    payload.extend_from_slice(&[OP_DELETE, name.len() as u8]);
                    payload.extend_from_slice(name.as_bytes());
                }
            }
        }
        encode_record(&payload)
    }

    #[test]
    fn torn_tails_are_cut_at_the_first_bad_record() {
        let a = record(&[("acme", Some("s1"))]);
        let b = record(&[("globex", Some("s2")), ("initech", None)]);
        let mut good = a.clone();
        good.extend_from_slice(&b);
        // Every prefix is a torn version of the two-record journal.
        for cut in 0..good.len() {
            let scanned = scan_journal(&good[..cut]).unwrap();
            let expect = if cut >= a.len() { a.len() } else { 0 };
            assert_eq!(scanned.valid_len, expect, "cut at {cut}");
        }
        // Zeroed pages after the last record, or a zeroed header of the last record.
        let mut zeros = good.clone();
        zeros.extend_from_slice(&[0u8; 4096]);
        assert_eq!(scan_journal(&zeros).unwrap().valid_len, good.len());
        let mut zero_header = good.clone();
        zero_header[a.len()..a.len() + HEADER_LEN].fill(0);
        assert_eq!(scan_journal(&zero_header).unwrap().valid_len, a.len());
    }

    #[test]
    fn damage_followed_by_an_intact_record_is_corruption() {
        let a = record(&[("acme", Some("s1"))]);
        let b = record(&[("globex", Some("s2"))]);
        let mut bytes = a.clone();
        bytes.extend_from_slice(&b);
        bytes[HEADER_LEN + 3] ^= 0x20;
        let (offset, reason) = scan_journal(&bytes).err().unwrap();
        assert_eq!(offset, 0);
        assert!(
            reason.contains(&format!("intact record follows at byte {}", a.len())),
            "{reason}"
        );
        // A damaged length field is caught the same way.
        let mut bytes = a.clone();
        bytes.extend_from_slice(&b);
        bytes[0] = 0xff;
        assert!(scan_journal(&bytes).is_err());
    }

    #[test]
    fn intact_records_with_bad_contents_are_corruption() {
        let bad_name = record(&[("ACME", Some("s1"))]);
        assert!(scan_journal(&bad_name).is_err());
        let mut payload = vec![9u8];
        payload.extend_from_slice(b"x");
        assert!(scan_journal(&encode_record(&payload)).is_err());
        let truncated_entry = encode_record(&[RECORD_VERSION, OP_SET, 10, b'a']);
        assert!(scan_journal(&truncated_entry).is_err());
    }
}
