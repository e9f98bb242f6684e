//! `policy = "script"`: a pool whose order is decided by an operator's Rhai script.
//!
//! A script is compiled once at load (`Script::load`), checked for what it may call
//! (only the engine's own functions and its own; no `import`, `eval`, `print` or
//! `debug`), and kept in the snapshot. At query time `order_recorded` looks the
//! decision up in the pool's `cache::Cache` and runs the script only on a miss, with
//! the client, the query name and the candidates in its scope; the script's last
//! expression is the answer: an array of site names, best first.
//!
//! The sandbox is the engine's configuration (`engine`): Rhai has no file, network or
//! process access to begin with, the time functions are compiled out (`no_time`),
//! modules too (`no_module`), `eval`, `print` and `debug` are disabled symbols, and each
//! run has an operations budget (`MAX_OPERATIONS`) and limits on call depth,
//! expression depth, string, array and map sizes. The only randomness is `rand()`,
//! seeded from the query name, so a script is a pure function of its inputs, which is
//! what makes its decisions cacheable.
//!
//! Invariant: a script's failure (a runtime error, the budget, a wrong result) is never
//! an error of the query: the pool answers by its `fallback` policy, the failure is
//! counted (`Counters`) and logged at debug at most; nothing here logs above debug.

pub mod cache;
pub(crate) mod metrics;

use std::cell::Cell;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, Scope};

use crate::geo::{Code2, Place};
use crate::model::{MAX_POOL_SITES, Policy, PoolIdx, SiteIdx};
use crate::policy::{Candidates, Picks, Recorder};
use crate::snapshot::{SiteState, ZoneSnap};

/// Operations one run may take (Rhai counts roughly one per expression evaluated and
/// per loop iteration). A run that would take more stops and the pool falls back.
pub const MAX_OPERATIONS: u64 = 100_000;
/// Nested function calls.
pub const MAX_CALL_LEVELS: usize = 16;
/// Expression nesting, at top level and inside functions.
pub const MAX_EXPR_DEPTH: usize = 64;
pub const MAX_FN_EXPR_DEPTH: usize = 32;
/// Bytes in one string.
pub const MAX_STRING_SIZE: usize = 4096;
/// Elements in one array.
pub const MAX_ARRAY_SIZE: usize = 1024;
/// Properties in one object map.
pub const MAX_MAP_SIZE: usize = 256;
/// Variables alive at once.
pub const MAX_VARIABLES: usize = 256;

/// Why a run gave no order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operations budget ran out.
    Budget,
    /// A limit other than the budget: call depth, a string, array or map too large.
    Limit,
    /// Any other runtime error (a function not found, a type mismatch, `throw`).
    Runtime,
    /// The result is not an array of strings.
    Result,
    /// The result names no candidate of the pool.
    Empty,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Budget,
        ErrorKind::Limit,
        ErrorKind::Runtime,
        ErrorKind::Result,
        ErrorKind::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Budget => "budget",
            ErrorKind::Limit => "limit",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Result => "result",
            ErrorKind::Empty => "empty",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A run's failure: its kind and what the engine said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

/// A script that does not compile or calls what it may not: line 0 when the file as a
/// whole is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub line: usize,
    pub message: String,
}

/// A script pool's counters, summed at `/metrics`; they start at 0 with each load.
#[derive(Debug, Default)]
pub struct Counters {
    /// Runs of the script (cache misses).
    pub runs: AtomicU64,
    /// Failed runs, by `ErrorKind`.
    pub errors: [AtomicU64; 5],
    /// Names in results that are no site of the pool.
    pub unknown_sites: AtomicU64,
}

impl Counters {
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()].load(Relaxed)
    }
}

/// A compiled pool script.
pub struct Script {
    /// The file, as the zone file names it resolved against the zone file's directory.
    pub path: PathBuf,
    ast: AST,
    /// The policy the pool answers by when a run fails.
    pub fallback: Policy,
    pub counters: Counters,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("path", &self.path)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

/// The names a script's scope holds.
const VARIABLES: [&str; 4] = ["client", "query", "qtype", "candidates"];

/// Functions of the language itself (keywords), always callable.
const KEYWORD_FUNCTIONS: [&str; 9] = [
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_def_var",
    "is_def_fn",
    "is_shared",
    "this",
    "!",
];

/// The one engine every script is compiled and run with.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(build_engine)
}

fn build_engine() -> Engine {
    let mut e = Engine::new();
    // The standard packages (arithmetic, strings, arrays, maps, math) have no I/O but
    // `print` and `debug`, which would write to stdout: disabled, and silenced besides.
    for symbol in ["eval", "print", "debug"] {
        e.disable_symbol(symbol);
    }
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});
    e.set_max_operations(MAX_OPERATIONS);
    e.set_max_call_levels(MAX_CALL_LEVELS);
    e.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH);
    e.set_max_string_size(MAX_STRING_SIZE);
    e.set_max_array_size(MAX_ARRAY_SIZE);
    e.set_max_map_size(MAX_MAP_SIZE);
    e.set_max_variables(MAX_VARIABLES);
    e.set_strict_variables(true);
    e.register_fn("rand", rand_float);
    e.register_fn("rand", rand_below);
    e.register_fn("hash", |s: &str| (fnv1a(s.as_bytes()) >> 1) as i64);
    e.register_fn("in_network", in_network);
    e
}

thread_local! {
    /// The state of `rand()` for the run on this thread, seeded from the query name.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

fn next_random() -> u64 {
    // splitmix64
    RNG.with(|state| {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// `rand()`: a float in [0, 1).
fn rand_float() -> f64 {
    (next_random() >> 11) as f64 / (1u64 << 53) as f64
}

/// `rand(n)`: an integer in [0, n), 0 when `n` is not positive.
fn rand_below(n: i64) -> i64 {
    if n <= 0 {
        return 0;
    }
    (next_random() % n as u64) as i64
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `in_network(network, prefix)`: whether the network `network` (`"addr/len"`, as
/// `client.network`) lies within `prefix` (`"addr/len"`, or a bare address as a host
/// route). A malformed argument is an error of the run.
fn in_network(inner: &str, outer: &str) -> Result<bool, Box<EvalAltResult>> {
    let (ia, il) = parse_net(inner)?;
    let (oa, ol) = parse_net(outer)?;
    Ok(match (ia, oa) {
        (IpAddr::V4(i), IpAddr::V4(o)) => {
            il >= ol
                && mask(u128::from(u32::from(i)), 32, ol) == mask(u128::from(u32::from(o)), 32, ol)
        }
        (IpAddr::V6(i), IpAddr::V6(o)) => {
            il >= ol && mask(u128::from(i), 128, ol) == mask(u128::from(o), 128, ol)
        }
        _ => false,
    })
}

fn parse_net(s: &str) -> Result<(IpAddr, u8), Box<EvalAltResult>> {
    let bad = || -> Box<EvalAltResult> {
        format!("\"{s}\" is not a network (expected \"address/length\")").into()
    };
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(bad)?,
        None => bits,
    };
    Ok((addr, len))
}

/// `value`, an address of `bits` bits, with all but the first `len` bits cleared.
fn mask(value: u128, bits: u8, len: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let keep = u32::from(len.min(bits));
    let total = u32::from(bits);
    (value >> (total - keep)) << (total - keep)
}

/// The network the GeoIP decision used: `addr` with all but `prefix` bits cleared.
pub fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4((mask(u128::from(u32::from(a)), 32, prefix) as u32).into()),
        IpAddr::V6(a) => IpAddr::V6(mask(u128::from(a), 128, prefix).into()),
    }
}

impl Script {
    /// Reads and compiles `path` (a failure to read is a `LoadError` of line 0).
    pub fn load(path: &Path, fallback: Policy) -> Result<Script, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|err| LoadError {
            line: 0,
            message: format!("cannot read script: {err}"),
        })?;
        Script::compile(path, &text, fallback)
    }

    /// Compiles `text` and checks what it calls.
    pub fn compile(path: &Path, text: &str, fallback: Policy) -> Result<Script, LoadError> {
        let engine = engine();
        let mut scope = Scope::new();
        // Declared for the strict-variables check, as variables: the optimizer would
        // fold a constant's compile-time value into the script.
        for name in VARIABLES {
            scope.push(name, ());
        }
        let ast = engine
            .compile_with_scope(&scope, text)
            .map_err(|err| LoadError {
                line: err.position().line().unwrap_or(0),
                message: parse_message(&err),
            })?;
        check_calls(engine, &ast)?;
        Ok(Script {
            path: path.to_path_buf(),
            ast,
            fallback,
            counters: Counters::default(),
        })
    }

    /// Runs the script once on `input` and turns its result into site indices (into
    /// `input.sites`' `idx`), best first, only candidates, each once. Does not count.
    pub fn run(&self, input: &Input<'_>) -> Result<Ran, Failure> {
        let mut scope = Scope::new();
        scope.push_constant("client", input.client.to_dynamic());
        scope.push_constant("query", ImmutableString::from(input.query.as_str()));
        scope.push_constant(
            "qtype",
            ImmutableString::from(if input.v4 { "A" } else { "AAAA" }),
        );
        scope.push_constant("candidates", sites_dynamic(&input.sites));
        RNG.with(|s| s.set(fnv1a(input.query.as_bytes())));
        let result = engine()
            .eval_ast_with_scope::<Dynamic>(&mut scope, &self.ast)
            .map_err(|err| runtime_failure(&err))?;
        order_from(&result, &input.sites)
    }
}

fn parse_message(err: &rhai::ParseError) -> String {
    let text = err.err_type().to_string();
    if text.contains("'import'") || text.contains("'export'") {
        return "modules cannot be loaded: `import` is not available to pool scripts".into();
    }
    for symbol in ["eval", "print", "debug"] {
        if text.contains(&format!("'{symbol}'")) {
            return format!("`{symbol}` is not available to pool scripts (no eval and no I/O)");
        }
    }
    text
}

/// Every function the script calls must be one of the engine's or its own: a call to
/// anything else (`open`, `system`, `timestamp`, `http_get`...) fails at load, not on
/// the first query that reaches it.
fn check_calls(engine: &Engine, ast: &AST) -> Result<(), LoadError> {
    let mut known: std::collections::HashSet<String> = engine
        .gen_fn_signatures(true)
        .iter()
        .filter_map(|sig| sig.split('(').next())
        .map(|name| name.trim().to_string())
        .collect();
    known.extend(ast.iter_functions().map(|f| f.name.to_string()));
    known.extend(KEYWORD_FUNCTIONS.iter().map(|s| s.to_string()));
    let mut bad: Option<LoadError> = None;
    ast.walk(&mut |path| {
        let Some(rhai::ASTNode::Expr(expr)) = path.last() else {
            if let Some(rhai::ASTNode::Stmt(rhai::Stmt::FnCall(call, pos))) = path.last() {
                return check_call(&known, call, *pos, &mut bad);
            }
            return true;
        };
        match expr {
            rhai::Expr::FnCall(call, pos) => check_call(&known, call, *pos, &mut bad),
            rhai::Expr::MethodCall(call, pos) => check_call(&known, call, *pos, &mut bad),
            _ => true,
        }
    });
    match bad {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn check_call(
    known: &std::collections::HashSet<String>,
    call: &rhai::FnCallExpr,
    pos: Position,
    bad: &mut Option<LoadError>,
) -> bool {
    if call.op_token.is_some() || known.contains(call.name.as_str()) {
        return true;
    }
    *bad = Some(LoadError {
        line: pos.line().unwrap_or(0),
        message: format!(
            "unknown function `{}`: pool scripts can call only the language's own functions, \
             rand, hash, in_network and functions they define (no I/O, clock or modules)",
            call.name
        ),
    });
    false
}

fn runtime_failure(err: &EvalAltResult) -> Failure {
    let kind = match err {
        EvalAltResult::ErrorTooManyOperations(..) => ErrorKind::Budget,
        EvalAltResult::ErrorStackOverflow(..)
        | EvalAltResult::ErrorDataTooLarge(..)
        | EvalAltResult::ErrorTooManyVariables(..) => ErrorKind::Limit,
        _ => ErrorKind::Runtime,
    };
    Failure {
        kind,
        message: err.to_string(),
    }
}

/// What a script sees of the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientFacts {
    pub country: Option<Code2>,
    pub continent: Option<Code2>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// The network the GeoIP decision used.
    pub network: IpAddr,
    pub prefix: u8,
    /// Whether the client address came from ECS.
    pub ecs: bool,
}

impl ClientFacts {
    pub fn new(place: Option<&Place>, addr: IpAddr, prefix: u8, ecs: bool) -> ClientFacts {
        let coord = place.and_then(|p| p.coord);
        ClientFacts {
            country: place.and_then(|p| p.country),
            continent: place.and_then(|p| p.continent),
            lat: coord.map(|c| c.lat),
            lon: coord.map(|c| c.lon),
            network: network_of(addr, prefix),
            prefix,
            ecs,
        }
    }

    pub fn to_dynamic(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert("country".into(), code(self.country));
        m.insert("continent".into(), code(self.continent));
        m.insert(
            "lat".into(),
            self.lat.map_or(Dynamic::UNIT, Dynamic::from_float),
        );
        m.insert(
            "lon".into(),
            self.lon.map_or(Dynamic::UNIT, Dynamic::from_float),
        );
        m.insert(
            "network".into(),
            Dynamic::from(ImmutableString::from(format!(
                "{}/{}",
                self.network, self.prefix
            ))),
        );
        m.insert(
            "address".into(),
            Dynamic::from(ImmutableString::from(self.network.to_string())),
        );
        m.insert("prefix".into(), Dynamic::from_int(i64::from(self.prefix)));
        m.insert("ecs".into(), Dynamic::from_bool(self.ecs));
        Dynamic::from_map(m)
    }
}

fn code(c: Option<Code2>) -> Dynamic {
    c.map_or(Dynamic::UNIT, |c| {
        Dynamic::from(ImmutableString::from(c.as_str()))
    })
}

/// What a script sees of one site of the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteFact<'a> {
    pub idx: SiteIdx,
    pub name: &'a str,
    pub state: SiteState,
    /// Whether the health rule lets the pool answer with it (up, or failing open).
    pub candidate: bool,
    pub weight: u32,
    /// The latest probe latency, when the snapshot carries one.
    pub latency_ms: Option<f64>,
    pub distance_km: Option<f64>,
    pub country: Option<Code2>,
    pub continent: Option<Code2>,
}

fn sites_dynamic(sites: &[SiteFact<'_>]) -> Dynamic {
    let array: Array = sites
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("name".into(), Dynamic::from(ImmutableString::from(s.name)));
            let state = match s.state {
                SiteState::Up => "up",
                SiteState::Down => "down",
                SiteState::Drain => "drain",
            };
            m.insert("state".into(), Dynamic::from(ImmutableString::from(state)));
            m.insert("candidate".into(), Dynamic::from_bool(s.candidate));
            m.insert("weight".into(), Dynamic::from_int(i64::from(s.weight)));
            m.insert(
                "latency_ms".into(),
                s.latency_ms.map_or(Dynamic::UNIT, Dynamic::from_float),
            );
            m.insert(
                "distance_km".into(),
                s.distance_km.map_or(Dynamic::UNIT, |km| {
                    Dynamic::from_float((km * 10.0).round() / 10.0)
                }),
            );
            m.insert("country".into(), code(s.country));
            m.insert("continent".into(), code(s.continent));
            Dynamic::from_map(m)
        })
        .collect();
    Dynamic::from_array(array)
}

/// Everything one run sees.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub client: ClientFacts,
    /// The query name, lower case, without the final dot.
    pub query: String,
    pub v4: bool,
    /// The pool's sites with an address of the family, in configured order.
    pub sites: Vec<SiteFact<'a>>,
}

/// A successful run: the order, and the names it gave that are no site of the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub order: Vec<SiteIdx>,
    /// The first few unknown names (for explain).
    pub unknown: Vec<String>,
    /// How many names were unknown.
    pub unknown_count: u64,
}

/// The script's result as an order of candidates: an array of strings, names of sites
/// of the pool; names of sites that are not candidates (down, drained) are skipped,
/// names of no site of the pool are reported in `unknown`, repeats are dropped.
pub fn order_from(result: &Dynamic, sites: &[SiteFact<'_>]) -> Result<Ran, Failure> {
    let not_array = || Failure {
        kind: ErrorKind::Result,
        message: format!(
            "the script returned {}, not an array of site names",
            result.type_name()
        ),
    };
    let Some(array) = result.read_lock::<Array>() else {
        return Err(not_array());
    };
    let mut order: Vec<SiteIdx> = Vec::new();
    let mut unknown = Vec::new();
    let mut unknown_count = 0;
    for item in array.iter() {
        let Some(name) = item.read_lock::<ImmutableString>() else {
            return Err(Failure {
                kind: ErrorKind::Result,
                message: format!(
                    "the result holds {}, not a site name (a string)",
                    item.type_name()
                ),
            });
        };
        match sites.iter().find(|s| s.name == name.as_str()) {
            Some(site) if site.candidate && !order.contains(&site.idx) => {
                if order.len() < MAX_POOL_SITES {
                    order.push(site.idx);
                }
            }
            Some(_) => {}
            None => {
                unknown_count += 1;
                if unknown.len() < 8 {
                    unknown.push(name.to_string());
                }
            }
        }
    }
    if order.is_empty() {
        return Err(Failure {
            kind: ErrorKind::Empty,
            message: "the result names no candidate of the pool".into(),
        });
    }
    Ok(Ran {
        order,
        unknown,
        unknown_count,
    })
}

/// The query name from its lower-case wire key: labels joined by dots, without the
/// final one; bytes other than letters, digits, `-` and `_` as `\DDD`.
pub fn query_name(key: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = key;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            break;
        }
        if !out.is_empty() {
            out.push('.');
        }
        for &b in &tail[..len] {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        rest = &tail[len..];
    }
    out
}

/// What explain reports about a script pool's pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `None`: the script decided; else why the pool fell back.
    pub failure: Option<Failure>,
    /// Names in the result that are no site of the pool.
    pub unknown: Vec<String>,
    pub fallback: Policy,
}

/// One script pool's pick for one query.
pub struct Call<'a> {
    pub zone: &'a ZoneSnap,
    pub pool: PoolIdx,
    pub v4: bool,
    pub cands: &'a Candidates,
    pub place: Option<&'a Place>,
    pub addr: IpAddr,
    pub prefix: u8,
    pub ecs: bool,
    /// The query name, lower-case wire key.
    pub qname: &'a [u8],
}

/// Orders a script pool's candidates into `picks` (at most `want`): from the cache, or
/// by running the script (then cached). `Err(fallback)` when the script failed (now or
/// for the same key before): the caller orders by that policy instead. With an active
/// recorder (explain), the script runs afresh, outside the cache and the counters, and
/// the recorder hears its outcome.
pub fn order_recorded<R: Recorder>(
    call: &Call<'_>,
    want: usize,
    picks: &mut Picks,
    rec: &mut R,
) -> Result<(), Policy> {
    let z = &call.zone.zone;
    let Some(def) = z.pools.get(usize::from(call.pool)) else {
        return Err(Policy::Failover);
    };
    let Some(script) = def.script.as_deref() else {
        return Err(Policy::Failover);
    };
    let cache = call
        .zone
        .pools
        .pools
        .get(usize::from(call.pool))
        .and_then(|p| p.script_cache.as_ref());
    let key = cache::Key {
        network: network_of(call.addr, call.prefix),
        prefix: call.prefix,
        ecs: call.ecs,
        v4: call.v4,
        name: call.qname,
    };
    if !R::ACTIVE
        && let Some(cache) = cache
        && let Some(hit) = cache.get(&key, picks, want)
    {
        return hit.map_err(|_| script.fallback);
    }
    let input = input(call, script);
    let ran = script.run(&input);
    if R::ACTIVE {
        rec.script(&Report {
            failure: ran.as_ref().err().cloned(),
            unknown: ran.as_ref().map(|r| r.unknown.clone()).unwrap_or_default(),
            fallback: script.fallback,
        });
    } else {
        let c = &script.counters;
        c.runs.fetch_add(1, Relaxed);
        match &ran {
            Ok(r) => {
                c.unknown_sites.fetch_add(r.unknown_count, Relaxed);
            }
            Err(f) => {
                c.errors[f.kind.index()].fetch_add(1, Relaxed);
                tracing::trace!(script = %script.path.display(), kind = f.kind.as_str(), error = %f.message, "pool script failed; falling back");
            }
        }
        if let Some(cache) = cache {
            let outcome = match &ran {
                Ok(r) => cache::Outcome::Order(r.order.clone().into_boxed_slice()),
                Err(f) => cache::Outcome::Failed(f.kind),
            };
            cache.insert(&key, outcome);
        }
    }
    match ran {
        Ok(r) => {
            for site in r.order.into_iter().take(want) {
                picks.push(site);
            }
            Ok(())
        }
        Err(_) => Err(script.fallback),
    }
}

fn input<'a>(call: &Call<'a>, _script: &Script) -> Input<'a> {
    let z = &call.zone.zone;
    let client_unit = call.place.and_then(|p| p.unit);
    let sites = z
        .pools
        .get(usize::from(call.pool))
        .map(|def| &def.sites[..])
        .unwrap_or(&[])
        .iter()
        .filter_map(|&idx| {
            let site = z.sites.get(usize::from(idx))?;
            let has = if call.v4 {
                !site.v4.is_empty()
            } else {
                !site.v6.is_empty()
            };
            if !has {
                return None;
            }
            let facts = z.facts.get(usize::from(idx));
            Some(SiteFact {
                idx,
                name: &site.name,
                state: call
                    .zone
                    .states
                    .get(usize::from(idx))
                    .copied()
                    .unwrap_or(SiteState::Up),
                candidate: call.cands.sites.contains(&idx),
                weight: facts.map_or(1, |f| f.weight),
                latency_ms: call
                    .zone
                    .pools
                    .live
                    .latency(idx)
                    .map(|d| d.as_secs_f64() * 1000.0),
                distance_km: client_unit
                    .zip(facts.and_then(|f| f.unit))
                    .map(|(c, u)| c.distance_km(&u)),
                country: site.country,
                continent: site.continent,
            })
        })
        .collect();
    Input {
        client: ClientFacts::new(call.place, call.addr, call.prefix, call.ecs),
        query: query_name(call.qname),
        v4: call.v4,
        sites,
    }
}

#[cfg(test)]
mod tests;
