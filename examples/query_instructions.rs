//! Answers one query shape N times, for counting instructions per query under
//! callgrind (the difference of two runs with different N is the cost of the extra
//! queries, without the start-up):
//!
//! ```sh
//! cargo build --release --example query_instructions
//! for n in 2000 12000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/query_instructions fast geo_ecs $n 2>&1 | grep 'refs'
//! done
//! ```
//!
//! Paths: `fast` (`dns::fast_respond`) or `respond`. Shapes: one per policy of the
//! example zone (`geo_ecs`, `weighted`, `round_robin`, `failover`, `hash`), `static`,
//! and `tenant` (a tenant name answered with a CNAME to its shard's pool).

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;

use geolb::app::{self, Settings};
use geolb::dns::{self, Transport, fast_respond};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

fn message(name: &str, ecs: Option<&str>) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    m.add_query(Query::query(name, RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(subnet) = ecs {
        let subnet: ClientSubnet = subnet.parse().unwrap_or_else(|e| panic!("{subnet}: {e:?}"));
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    m.set_edns(edns);
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, shape, n) = match args.as_slice() {
        [_, path, shape, n] => (path.as_str(), shape.as_str(), n.parse::<usize>().unwrap()),
        _ => panic!("usage: query_instructions fast|respond SHAPE N"),
    };
    let (name, ecs) = match shape {
        "static" => ("static.example.test.", None),
        "geo_ecs" => ("www.example.test.", Some("127.0.1.0/24")),
        "weighted" => ("api.example.test.", None),
        "round_robin" => ("cdn.example.test.", None),
        "failover" => ("db.example.test.", None),
        "hash" => ("login.example.test.", Some("127.0.9.0/24")),
        "tenant" => ("acme.tenant.example.test.", None),
        other => panic!("unknown shape {other}"),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings {
        zones: vec![root.join("zones")],
        geoip: Some(root.join("geoip/demo.mmdb")),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = app::snapshot_all_up(&loaded);
    let bytes = message(name, ecs);
    let src: IpAddr = [127, 0, 0, 1].into();
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    let mut total = 0usize;
    for _ in 0..n {
        total += match path {
            "fast" => fast_respond(black_box(&snapshot), black_box(&bytes), src, &mut out)
                .expect("the fast path declined"),
            _ => dns::respond(black_box(&snapshot), black_box(&bytes), src, Transport::Udp)
                .expect("no reply")
                .len(),
        };
    }
    println!("{total}");
}
