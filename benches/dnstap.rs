//! What dnstap costs per query, without sockets: the UDP thread's part (the sample
//! countdown, and for a logged query the copy into a recycled entry and the queue
//! hand-off, with the writer draining into a reader that discards) at full rate and at
//! `dnstap_sample = 100`, and the writer's part (encoding the AUTH_QUERY and
//! AUTH_RESPONSE frames of one query), on the geo-with-ECS query of `benches/query.rs`.

use std::hint::black_box;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use geolb::app::{self, Settings};
use geolb::dns::{self, fast_respond};
use geolb::dnstap::{Config, Counters, Dnstap, Kind, Protocol, Time, fstrm, proto};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

/// The geo A query with ECS and its reply from the fast path.
fn exchange() -> (Vec<u8>, Vec<u8>) {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii("www.example.test.").unwrap_or_else(|e| panic!("{e}"));
    m.add_query(Query::query(name, RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    let subnet: ClientSubnet = "127.0.1.0/24".parse().unwrap_or_else(|e| panic!("{e:?}"));
    edns.options_mut().insert(EdnsOption::Subnet(subnet));
    m.set_edns(edns);
    let query = m.to_vec().unwrap_or_else(|e| panic!("{e}"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings {
        zones: vec![root.join("zones")],
        geoip: Some(root.join("geoip/demo.mmdb")),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = app::snapshot_all_up(&loaded);
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    let src: IpAddr = [127, 0, 0, 1].into();
    let len = fast_respond(&snapshot, &query, src, &mut out)
        .unwrap_or_else(|| panic!("the fast path declined"));
    out.truncate(len);
    (query, out)
}

/// A reader that shakes hands and then reads and discards everything.
fn reader(listener: UnixListener) {
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        if fstrm::read_control(&mut stream).is_err() {
            return;
        }
        use std::io::Write;
        if stream
            .write_all(&fstrm::control(fstrm::ACCEPT, true))
            .is_err()
            || fstrm::read_control(&mut stream).is_err()
        {
            return;
        }
        let mut buf = vec![0u8; 256 << 10];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
}

fn enqueue(c: &mut Criterion) {
    let (query, response) = exchange();
    let client: SocketAddr = "192.0.2.1:53000".parse().unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("dnstap_enqueue");
    for sample in [1u32, 100] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let socket = dir.path().join("dnstap.sock");
        let listener = UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
        reader(listener);
        let counters = Arc::new(Counters::default());
        let config = Config { socket, sample };
        let dnstap = Dnstap::start(&config, b"ns1", b"geolb", counters.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sink = dnstap.sink(Some(
            "127.0.0.1:53".parse().unwrap_or_else(|e| panic!("{e}")),
        ));
        let time = Time::now();
        let mut logged = 0u64;
        // Timed in chunks of 512 logged queries (the queue holds 1024, and the thread
        // wakes the writer every 256); between chunks, untimed, the writer catches up, so every timed call finds a free entry, as a
        // server does while the reader keeps up.
        let chunk = 512 * u64::from(sample);
        group.bench_function(format!("sample_{sample}"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = chunk.min(iters - done);
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        if sink.sampled() {
                            sink.log(client, time, black_box(&query), Some(black_box(&response)));
                            logged += 1;
                        }
                    }
                    total += started.elapsed();
                    done += n;
                    while counters.sent() + counters.dropped() < 2 * logged {
                        std::thread::yield_now();
                    }
                }
                total
            })
        });
        println!(
            "dnstap_sample = {sample}: {logged} queries logged, {} messages sent, {} dropped",
            counters.sent(),
            counters.dropped()
        );
        dnstap.shutdown();
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let (query, response) = exchange();
    let event = proto::Event {
        kind: Kind::AuthQuery,
        protocol: Protocol::Udp,
        query_address: "192.0.2.1:53000".parse().unwrap_or_else(|e| panic!("{e}")),
        response_address: Some("127.0.0.1:53".parse().unwrap_or_else(|e| panic!("{e}"))),
        query_time: Time::now(),
        response_time: None,
        query_message: Some(&query),
        response_message: None,
    };
    let answer = proto::Event {
        kind: Kind::AuthResponse,
        response_time: Some(Time::now()),
        query_message: None,
        response_message: Some(&response),
        ..event
    };
    let (mut out, mut scratch) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    c.bench_function("dnstap_encode_query_and_response", |b| {
        b.iter(|| {
            out.clear();
            for e in [&event, &answer] {
                fstrm::data_frame(&mut out, |out| {
                    proto::encode(out, &mut scratch, b"ns1", b"geolb", black_box(e))
                });
            }
            out.len()
        })
    });
}

criterion_group!(benches, enqueue, encode);
criterion_main!(benches);
