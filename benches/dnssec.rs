//! DNSSEC signing costs: one RRSIG over a two-address A RRset (algorithms 13 and 15),
//! the `Signer`'s miss path (key building, signing, cache insert) and its hit path
//! (key building, lookup, a clone of the cached RRSIG).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use geolb::dnssec::sign::rrsig_record;
use geolb::dnssec::{Algorithm, Signer, SignerSettings, Timing, ZoneKeys, keygen};
use hickory_proto::rr::{Name, RData, Record};

const NOW: u32 = 1_796_152_579;

/// Counts allocations so that the bench can print allocations per cache hit.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by one call of `f`.
fn allocations<T>(f: impl FnOnce() -> T) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let result = f();
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    drop(result);
    after - before
}

fn signer(algorithm: Algorithm) -> Signer {
    let origin = Name::from_str("example.test.").expect("valid name");
    let key = |ksk| {
        keygen::generate(&origin, algorithm, ksk, NOW)
            .expect("key generation")
            .key
            .with_timing(Timing::default())
    };
    let keys = ZoneKeys::from_keys(&origin, vec![key(true), key(false)]).expect("a KSK and a ZSK");
    Signer::new(keys, SignerSettings::default()).expect("default settings")
}

fn answer(n: u32) -> Vec<Record> {
    let owner = Name::from_str("www.example.test.").expect("valid name");
    [n, n.wrapping_add(1)]
        .into_iter()
        .map(|addr| Record::from_rdata(owner.clone(), 30, RData::A(Ipv4Addr::from(addr).into())))
        .collect()
}

fn sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("dnssec");
    for (label, algorithm) in [
        ("13", Algorithm::EcdsaP256Sha256),
        ("15", Algorithm::Ed25519),
    ] {
        let signer = signer(algorithm);
        let key = signer.keys().zone_signer(NOW).expect("an active ZSK");
        let records = answer(0xc000_0201);
        group.bench_function(format!("rrsig A/alg {label}"), |b| {
            b.iter(|| rrsig_record(key, black_box(&records), None, NOW - 3600, NOW + 604_800))
        });
        // Every iteration a new RRset: a miss, a signature and an insert (evicting
        // once the cache is full).
        let mut n = 0u32;
        group.bench_function(format!("signer miss/alg {label}"), |b| {
            b.iter_batched(
                || {
                    n = n.wrapping_add(2);
                    answer(n)
                },
                |records| signer.sign(&records, None, NOW),
                BatchSize::SmallInput,
            )
        });
        signer.sign(&records, None, NOW).expect("signed");
        let n = allocations(|| signer.sign(&records, None, NOW));
        println!("allocations per cache hit, alg {label}: {n}");
        group.bench_function(format!("signer hit/alg {label}"), |b| {
            b.iter(|| signer.sign(black_box(&records), None, NOW))
        });
        let prepared = signer.prepare(&records, None).expect("an RRset");
        let n = allocations(|| signer.sign_prepared(&prepared, NOW));
        println!("allocations per prepared cache hit, alg {label}: {n}");
        group.bench_function(format!("signer hit prepared/alg {label}"), |b| {
            b.iter(|| signer.sign_prepared(black_box(&prepared), NOW))
        });
    }
    let signer = signer(Algorithm::EcdsaP256Sha256);
    signer.sign_dnskey_set(NOW).expect("signed");
    let n = allocations(|| signer.sign_dnskey_set(NOW));
    println!("allocations per DNSKEY set hit, alg 13: {n}");
    group.bench_function("dnskey set hit/alg 13", |b| {
        b.iter(|| signer.sign_dnskey_set(black_box(NOW)))
    });
    group.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
