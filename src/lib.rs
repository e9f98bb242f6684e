//! geolb: an authoritative GeoDNS load-balancing server.
//!
//! # Layout
//! - `config`: raw TOML structs and located errors.
//! - `model`: validated zones, sites, checks, pools, shards.
//! - `geo`: where is this client (MaxMind DB).
//! - `policy`: geo, weighted, round-robin, failover, hash, fastest, least-loaded: pure ordering functions.
//! - `script`: `policy = "script"`: sandboxed Rhai pool scripts and their decision cache.
//! - `health`: probes and their rise/fall state machines.
//! - `live`: probe latencies and reported weights as the compiler keeps them.
//! - `tenants`: tenant maps, their journal, and the shared tenant table.
//! - `snapshot`: the immutable, compiled view a query reads.
//! - `dns`: the answer to one query, from bytes to bytes.
//! - `dnssec`: zone keys, RRSIG and NSEC rdata, the signer and its signature cache.
//! - `server`: UDP and TCP front ends.
//! - `rrl`: response rate limiting of UDP replies.
//! - `dnstap`: the query log, Frame Streams to a unix socket.
//! - `explain`: the decision behind one answer, recorded by the code that answers.
//! - `metrics`: per-thread query counters and the `/metrics` exposition.
//! - `admin`: the HTTP admin API.
//! - `app`: wiring: loading, the compiler task, signals.
//! - `service`: the service manager's view: sd_notify and the liveness check.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod config;
pub mod dns;
pub mod dnssec;
pub mod dnstap;
pub mod explain;
pub mod fleet;
pub mod geo;
pub mod health;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod overrides;
pub mod policy;
pub mod rrl;
pub mod script;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod status;
pub mod tenants;
pub mod zonefile;
