//! Durability tests of the tenant store: restarts, torn journals, compaction, reload.
//!
//! A "crash" here is simulated by copying the map and journal files while the store
//! is still open (exactly what is on disk at that instant, with no shutdown work) and
//! opening the copy, or by dropping the store without compacting.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geolb::tenants::{ShardIdx, ShardNames, TenantStore, TenantStoreError, TenantStoreOptions};

fn shards() -> ShardNames {
    ShardNames::new(["s1", "s2", "s3"]).unwrap()
}

/// Options that never compact on their own, so tests decide when it happens.
fn manual() -> TenantStoreOptions {
    TenantStoreOptions {
        compact_after_idle: Duration::from_secs(3600),
        compact_after_changes: usize::MAX,
    }
}

fn setup(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("example.tenants.toml");
    fs::write(&map, text).unwrap();
    (dir, map)
}

fn journal(map: &Path) -> PathBuf {
    let mut s = map.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

fn journal_len(map: &Path) -> u64 {
    fs::metadata(journal(map)).unwrap().len()
}

fn set(name: &str, shard: u16) -> (Box<str>, Option<ShardIdx>) {
    (name.into(), Some(ShardIdx(shard)))
}

fn del(name: &str) -> (Box<str>, Option<ShardIdx>) {
    (name.into(), None)
}

fn listing(table: &geolb::tenants::TenantTable) -> Vec<(String, u16)> {
    table.iter().map(|(n, s)| (n.to_string(), s.0)).collect()
}

fn open(map: &Path) -> (TenantStore, geolb::tenants::TenantTable) {
    TenantStore::open_with(map, &shards(), manual()).unwrap()
}

/// Copies the store's files into a fresh directory, as a crash would leave them.
fn crash_copy(map: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("example.tenants.toml");
    fs::copy(map, &copy).unwrap();
    fs::copy(journal(map), journal(&copy)).unwrap();
    (dir, copy)
}

const START: &str = "acme = \"s1\"\nglobex = \"s2\"\n";

#[tokio::test]
async fn apply_then_restart_sees_the_change_without_compaction() {
    let (_dir, map) = setup(START);
    let (store, table) = open(&map);
    assert_eq!(listing(&table), [("acme".into(), 0), ("globex".into(), 1)]);

    let t = store
        .apply(vec![set("acme", 1), set("Initech", 2), del("globex")])
        .await
        .unwrap();
    assert_eq!(listing(&t), [("acme".into(), 1), ("initech".into(), 2)]);
    assert_eq!(listing(&store.current()), listing(&t));
    drop(store);

    // Nothing was folded into the map; the journal carries the change.
    assert_eq!(fs::read_to_string(&map).unwrap(), START);
    assert!(journal_len(&map) > 0);
    let (_store, reopened) = open(&map);
    assert_eq!(
        listing(&reopened),
        [("acme".into(), 1), ("initech".into(), 2)]
    );
}

#[tokio::test]
async fn crash_right_after_acknowledgement_loses_nothing() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    store.apply(vec![set("acme", 2)]).await.unwrap();
    store.apply(vec![set("hooli", 0)]).await.unwrap();
    // The store is still running: copy the files as a SIGKILL would leave them.
    let (_crash_dir, copy) = crash_copy(&map);
    let (_s, table) = open(&copy);
    assert_eq!(
        listing(&table),
        [
            ("acme".into(), 2),
            ("globex".into(), 1),
            ("hooli".into(), 0)
        ]
    );
}

#[tokio::test]
async fn torn_journal_tail_is_ignored_and_truncated() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    store.apply(vec![set("acme", 2)]).await.unwrap();
    drop(store);
    let good = journal_len(&map);

    // Half of a record: a header claiming 40 bytes, then only a few of them.
    let mut bytes = fs::read(journal(&map)).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 1, 4, b'a']);
    fs::write(journal(&map), &bytes).unwrap();

    let (store, table) = open(&map);
    assert_eq!(table.get("acme"), Some(ShardIdx(2)));
    assert_eq!(journal_len(&map), good);
    // New records go after the intact ones and survive another restart.
    store.apply(vec![set("globex", 2)]).await.unwrap();
    drop(store);
    let (_s, table) = open(&map);
    assert_eq!(listing(&table), [("acme".into(), 2), ("globex".into(), 2)]);
}

#[tokio::test]
async fn corrupt_record_in_the_middle_is_an_error() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    store.apply(vec![set("acme", 2)]).await.unwrap();
    store.apply(vec![set("globex", 0)]).await.unwrap();
    drop(store);
    let mut bytes = fs::read(journal(&map)).unwrap();
    bytes[10] ^= 0x01;
    fs::write(journal(&map), &bytes).unwrap();
    let err = TenantStore::open_with(&map, &shards(), manual()).unwrap_err();
    assert!(
        matches!(err, TenantStoreError::CorruptJournal { offset: 0, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.starts_with("corrupt journal "), "{message}");
    assert!(
        message.contains("example.tenants.toml.journal at byte 0"),
        "{message}"
    );
}

#[tokio::test]
async fn compaction_folds_the_journal_into_the_map() {
    let (_dir, map) = setup(START);
    let restricted = std::os::unix::fs::PermissionsExt::from_mode(0o640);
    fs::set_permissions(&map, restricted).unwrap();
    let (store, _) = open(&map);
    store
        .apply(vec![set("zeta", 2), del("acme")])
        .await
        .unwrap();
    store.compact_now().await.unwrap();
    assert_eq!(journal_len(&map), 0);
    let text = fs::read_to_string(&map).unwrap();
    assert!(text.starts_with('#'), "header comment expected:\n{text}");
    assert!(text.contains("SIGHUP"));
    assert!(text.ends_with("globex = \"s2\"\nzeta = \"s3\"\n"), "{text}");
    // The rewritten file keeps the original's permissions.
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&map), 0o640);
    // A second compaction with nothing pending is a no-op.
    store.compact_now().await.unwrap();
    store.apply(vec![set("acme", 0)]).await.unwrap();
    drop(store);
    let (_s, table) = open(&map);
    assert_eq!(
        listing(&table),
        [("acme".into(), 0), ("globex".into(), 1), ("zeta".into(), 2)]
    );
}

#[tokio::test]
async fn crash_between_map_rename_and_journal_truncation_is_harmless() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    store
        .apply(vec![set("acme", 2), set("new", 1)])
        .await
        .unwrap();
    store
        .apply(vec![del("new"), set("globex", 0)])
        .await
        .unwrap();
    let old_journal = fs::read(journal(&map)).unwrap();
    store.compact_now().await.unwrap();
    drop(store);
    // Put the folded records back, as if the truncation had not happened: replaying
    // them over the new map must give the same table.
    fs::write(journal(&map), &old_journal).unwrap();
    // And a half-written scratch map from an interrupted later compaction.
    let mut tmp = map.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, "garbage = ").unwrap();
    let (_s, table) = open(&map);
    assert_eq!(listing(&table), [("acme".into(), 2), ("globex".into(), 0)]);
    assert!(!Path::new(&tmp).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_are_all_durable_and_visible() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..200u16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let name = format!("tenant-{i}");
            let table = store.apply(vec![set(&name, i % 3)]).await.unwrap();
            // Each caller's table holds its own change.
            assert_eq!(table.get(&name), Some(ShardIdx(i % 3)));
            table.version()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    let current = store.current();
    assert_eq!(current.len(), 202);
    assert!(versions.iter().all(|v| *v <= current.version()));
    let (_crash_dir, copy) = crash_copy(&map);
    drop(store);
    for path in [&map, &copy] {
        let (_s, table) = open(path);
        assert_eq!(table.len(), 202);
        for i in 0..200u16 {
            assert_eq!(table.get(&format!("tenant-{i}")), Some(ShardIdx(i % 3)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_compaction_are_kept() {
    // A large map makes compaction take long enough for changes to overlap it.
    let mut text = String::new();
    for i in 0..100_000 {
        text.push_str(&format!("t{i} = \"s1\"\n"));
    }
    let (_dir, map) = setup(&text);
    let (store, _) = open(&map);
    let store = Arc::new(store);
    store.apply(vec![set("first", 1)]).await.unwrap();
    let compacting = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.compact_now().await })
    };
    for i in 0..50u16 {
        store
            .apply(vec![set(&format!("during-{i}"), 2)])
            .await
            .unwrap();
    }
    compacting.await.unwrap().unwrap();
    let (_crash_dir, copy) = crash_copy(&map);
    drop(store);
    for path in [&map, &copy] {
        let (store, table) = open(path);
        assert_eq!(table.len(), 100_051);
        assert_eq!(table.get("first"), Some(ShardIdx(1)));
        for i in 0..50 {
            assert_eq!(table.get(&format!("during-{i}")), Some(ShardIdx(2)));
        }
        store.compact_now().await.unwrap();
        assert_eq!(journal_len(path), 0);
    }
}

#[tokio::test]
async fn reload_keeps_hand_edits_and_reapplies_pending_changes() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    store.apply(vec![set("acme", 2)]).await.unwrap();

    // The operator edits the file (which does not have the API move yet).
    fs::write(&map, "acme = \"s1\"\nglobex = \"s1\"\nhooli = \"s2\"\n").unwrap();
    // Compaction refuses to overwrite the edit before a reload.
    let err = store.compact_now().await.unwrap_err();
    assert!(
        matches!(err, TenantStoreError::MapChangedOnDisk { .. }),
        "{err}"
    );
    assert!(fs::read_to_string(&map).unwrap().contains("hooli"));

    let before = store.current().version();
    let table = store.reload(&shards()).unwrap();
    assert!(table.version() > before);
    assert_eq!(
        listing(&table),
        [
            ("acme".into(), 2),
            ("globex".into(), 0),
            ("hooli".into(), 1)
        ]
    );
    assert_eq!(listing(&store.current()), listing(&table));
    store.compact_now().await.unwrap();
    assert_eq!(journal_len(&map), 0);
    let text = fs::read_to_string(&map).unwrap();
    assert!(
        text.ends_with("acme = \"s3\"\nglobex = \"s1\"\nhooli = \"s2\"\n"),
        "{text}"
    );
}

#[tokio::test]
async fn reload_with_errors_keeps_the_current_table() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    fs::write(&map, "acme = \"s9\"\nglobex = \"s1\"\nglobex = \"s2\"\n").unwrap();
    let errors = store.reload(&shards()).unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 3]);
    assert!(
        errors[0]
            .to_string()
            .ends_with(":1: acme: unknown shard \"s9\" (known: s1, s2, s3)")
    );
    assert_eq!(
        listing(&store.current()),
        [("acme".into(), 0), ("globex".into(), 1)]
    );
}

#[tokio::test]
async fn journal_entries_for_removed_shards_are_skipped() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    store
        .apply(vec![set("acme", 2), set("hooli", 2), set("globex", 0)])
        .await
        .unwrap();
    drop(store);
    // The operator removed s3 from the configuration.
    let two = ShardNames::new(["s1", "s2"]).unwrap();
    let (store, table) = TenantStore::open_with(&map, &two, manual()).unwrap();
    assert_eq!(listing(&table), [("acme".into(), 0), ("globex".into(), 0)]);
    store.compact_now().await.unwrap();
    assert_eq!(journal_len(&map), 0);
    assert!(!fs::read_to_string(&map).unwrap().contains("hooli"));
}

#[tokio::test]
async fn apply_validates_before_writing() {
    let (_dir, map) = setup(START);
    let (store, _) = open(&map);
    let err = store
        .apply(vec![set("ok", 0), set("bad.name", 0)])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid tenant name \"bad.name\": tenant name contains '.'; only letters, digits, '-' and '_' are allowed"
    );
    let err = store.apply(vec![set("ok", 7)]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant ok: shard index 7 is not a configured shard"
    );
    assert_eq!(journal_len(&map), 0);
    assert_eq!(store.current().get("ok"), None);
    // An empty batch changes nothing.
    let t = store.apply(Vec::new()).await.unwrap();
    assert_eq!(t.len(), 2);
}

#[tokio::test]
async fn second_store_on_the_same_map_is_refused() {
    let (_dir, map) = setup(START);
    let (_store, _) = open(&map);
    let err = TenantStore::open_with(&map, &shards(), manual()).unwrap_err();
    assert!(matches!(err, TenantStoreError::Locked { .. }), "{err}");
}

#[tokio::test]
async fn open_reports_map_errors_and_missing_files() {
    let (dir, map) = setup("acme = \"s1\"\nbad line\n");
    let err = TenantStore::open_with(&map, &shards(), manual()).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("tenant map has errors:\n"), "{message}");
    assert!(
        message.contains("example.tenants.toml:2: bad: expected '=' after the tenant name"),
        "{message}"
    );
    let missing = dir.path().join("missing.toml");
    let err = TenantStore::open_with(&missing, &shards(), manual()).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot read tenant map "),
        "{err}"
    );
}

#[tokio::test]
async fn idle_timer_compacts_in_the_background() {
    let (_dir, map) = setup(START);
    let options = TenantStoreOptions {
        compact_after_idle: Duration::from_millis(50),
        compact_after_changes: usize::MAX,
    };
    let (store, _) = TenantStore::open_with(&map, &shards(), options).unwrap();
    store.apply(vec![set("hooli", 2)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal_len(&map) > 0 {
        assert!(Instant::now() < deadline, "journal was not compacted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fs::read_to_string(&map)
            .unwrap()
            .contains("hooli = \"s3\"\n")
    );
}

#[tokio::test]
async fn named_changes_resolve_against_the_shards_in_force() {
    let (_dir, map) = setup("acme = \"s1\"\n");
    let (store, _) = open(&map);
    let table = store
        .apply_named(vec![
            ("Acme".into(), Some("s3".into())),
            ("new".into(), Some("s2".into())),
        ])
        .await
        .unwrap();
    assert_eq!(listing(&table), vec![("acme".into(), 2), ("new".into(), 1)]);
    // An unknown shard fails the whole batch and writes nothing.
    let before = journal_len(&map);
    let err = store
        .apply_named(vec![
            ("acme".into(), Some("s1".into())),
            ("x".into(), Some("s9".into())),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, TenantStoreError::UnknownShardName { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unknown shard \"s9\""), "{err}");
    assert_eq!(journal_len(&map), before);
    // After a reload that reorders the shards, a name still means that shard.
    let reordered = ShardNames::new(["s3", "s2", "s1"]).unwrap();
    store.reload(&reordered).unwrap();
    let table = store
        .apply_named(vec![
            ("acme".into(), Some("s1".into())),
            ("new".into(), None),
        ])
        .await
        .unwrap();
    assert_eq!(listing(&table), vec![("acme".into(), 2)]);
    assert_eq!(reordered.name(ShardIdx(2)), Some("s1"));
}
