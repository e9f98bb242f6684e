//! The wire fast path against the reference path on arbitrary bytes: the fast path must
//! not panic, and when it answers, its bytes must equal `respond`'s.
//! The first byte picks the source address and the output buffer size; the rest is the
//! datagram.

#![no_main]

use std::net::IpAddr;
use std::path::Path;
use std::sync::LazyLock;

use geolb::app::{self, Settings};
use geolb::dns::fast::compare;
use geolb::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

static SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let settings = Settings {
        zones: vec![
            root.join("zones/example.test.toml"),
            root.join("tests/data/core.test.toml"),
        ],
        geoip: Some(root.join("geoip/demo.mmdb")),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
    app::snapshot_all_up(&loaded)
});

const SOURCES: [[u8; 4]; 4] = [[127, 0, 0, 1], [127, 0, 1, 9], [192, 0, 2, 44], [10, 1, 2, 3]];
const OUT_LENS: [usize; 4] = [1232, 512, 100, 65535];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, query)) = data.split_first() else {
        return;
    };
    let src = IpAddr::from(SOURCES[usize::from(choice & 3)]);
    let out_len = OUT_LENS[usize::from((choice >> 2) & 3)];
    let (reference, fast) = compare(&SNAPSHOT, query, src, out_len);
    if let Some(fast) = fast {
        assert_eq!(reference.as_deref(), Some(&fast[..]), "query {query:02x?}");
    }
});
