//! "Why this answer": the decision behind one lookup, for `GET /v1/explain` and
//! `geolb explain`.
//!
//! `Decision` records what `dns::lookup` and the policies report while they answer
//! (`lookup::Trace`, `policy::Recorder`): the names walked, the tenant and its shard,
//! and for each pool pick the region rule, every candidate's distance, weight or score,
//! the rotation, the order and the addresses answered. `report` adds what the snapshot
//! compiled the candidates from (`snapshot::admissions`, the rule `compile_pools`
//! applies): each site's state and why it was or was not a candidate.
//! Invariant: nothing here re-decides anything; the query path records nothing (it
//! passes `NoRecord`), so explaining costs queries nothing.

use std::net::IpAddr;

use hickory_proto::rr::{Name, RecordType};
use serde_json::{Value, json};

use crate::dns::lookup::{self, Answer, Client, PoolPick, Trace};
use crate::model::{AllDown, Policy, PoolIdx, RegionKey, SiteIdx};
use crate::overrides::{Override, Overrides};
use crate::policy::Recorder;
use crate::snapshot::{Admission, SiteState, Snapshot, ZoneSnap};
use crate::tenants::ShardIdx;

/// What one lookup decided, as it decided it.
#[derive(Debug, Default)]
pub struct Decision {
    /// The names the lookup answered at, in order (`true`: the in-zone target of an
    /// MX, SRV or NS record, for the additional section).
    pub names: Vec<(Name, bool)>,
    pub tenant: Option<TenantStep>,
    pub pools: Vec<PoolStep>,
}

/// A tenant name and the shard that serves it.
#[derive(Debug)]
pub struct TenantStep {
    pub owner: Name,
    pub zone: String,
    pub tenant: String,
    pub shard: String,
    /// False when the tenant is not in the map and the default shard answers.
    pub listed: bool,
}

/// One pool's pick for one family.
#[derive(Debug)]
pub struct PoolStep {
    pub owner: Name,
    pub additional: bool,
    pub zone: String,
    pub pool: PoolIdx,
    pub v4: bool,
    /// Geo: the region rule that applied (`None`: none did) and its candidate sites.
    pub region: Option<(Option<RegionKey>, Vec<SiteIdx>)>,
    pub distances: Vec<(SiteIdx, Option<f64>)>,
    pub weights: Vec<(SiteIdx, u64)>,
    pub scores: Vec<(SiteIdx, u64)>,
    pub rotation: Option<usize>,
    /// The policy's order, best first (at most `answers` sites).
    pub order: Vec<SiteIdx>,
    /// The addresses answered, with their sites.
    pub answered: Vec<(SiteIdx, IpAddr)>,
    pub scope: u8,
    /// Script: the run's outcome.
    pub script: Option<crate::script::Report>,
}

impl Recorder for Decision {
    fn region(&mut self, rule: Option<RegionKey>, sites: &[SiteIdx]) {
        if let Some(pool) = self.pools.last_mut() {
            pool.region = Some((rule, sites.to_vec()));
        }
    }

    fn distance(&mut self, site: SiteIdx, km: Option<f64>) {
        if let Some(pool) = self.pools.last_mut() {
            pool.distances.push((site, km));
        }
    }

    fn weight(&mut self, site: SiteIdx, weight: u64) {
        if let Some(pool) = self.pools.last_mut() {
            pool.weights.push((site, weight));
        }
    }

    fn score(&mut self, site: SiteIdx, score: u64) {
        if let Some(pool) = self.pools.last_mut() {
            pool.scores.push((site, score));
        }
    }

    fn rotation(&mut self, start: usize) {
        if let Some(pool) = self.pools.last_mut() {
            pool.rotation = Some(start);
        }
    }

    fn script(&mut self, report: &crate::script::Report) {
        if let Some(pool) = self.pools.last_mut() {
            pool.script = Some(report.clone());
        }
    }
}

impl Trace for Decision {
    fn name(&mut self, owner: &Name, additional: bool) {
        self.names.push((owner.clone(), additional));
    }

    fn tenant(&mut self, zone: &ZoneSnap, label: &[u8], shard: ShardIdx, listed: bool) {
        let shard = zone
            .zone
            .sharding
            .as_ref()
            .and_then(|s| s.shard_names.get(usize::from(shard.0)))
            .cloned()
            .unwrap_or_default();
        self.tenant = Some(TenantStep {
            owner: self
                .names
                .last()
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
            zone: zone.zone.name.clone(),
            tenant: String::from_utf8_lossy(label).to_ascii_lowercase(),
            shard,
            listed,
        });
    }

    fn pool(&mut self, zone: &ZoneSnap, pool: PoolIdx, v4: bool) {
        let (owner, additional) = self.names.last().cloned().unwrap_or_default();
        self.pools.push(PoolStep {
            owner,
            additional,
            zone: zone.zone.name.clone(),
            pool,
            v4,
            region: None,
            distances: Vec::new(),
            weights: Vec::new(),
            scores: Vec::new(),
            rotation: None,
            order: Vec::new(),
            answered: Vec::new(),
            scope: 0,
            script: None,
        });
    }

    fn picked(&mut self, pick: &PoolPick<'_, '_>) {
        if let Some(pool) = self.pools.last_mut() {
            pool.order = pick.sites().to_vec();
            pool.answered = pick.addresses_by_site().collect();
            pool.scope = pick.scope;
        }
    }
}

/// Answers the question as a query would, recording the decision.
pub fn decide(
    snapshot: &Snapshot,
    qname: &Name,
    qtype: RecordType,
    client: &Client,
) -> (Answer, Decision) {
    let mut decision = Decision::default();
    let answer = lookup::lookup_recorded(snapshot, qname, qtype, client, &mut decision);
    (answer, decision)
}

/// The decision as JSON (the `decision` object of `GET /v1/explain`), with every
/// site's state and the reason it was answered or skipped.
pub fn report(snapshot: &Snapshot, decision: &Decision, overrides: &Overrides) -> Value {
    let names: Vec<Value> = decision
        .names
        .iter()
        .map(|(name, additional)| json!({ "name": name.to_string(), "additional": additional }))
        .collect();
    let tenant = decision.tenant.as_ref().map(|t| {
        json!({
            "zone": t.zone,
            "name": t.owner.to_string(),
            "tenant": t.tenant,
            "shard": t.shard,
            "listed": t.listed,
        })
    });
    let pools: Vec<Value> = decision
        .pools
        .iter()
        .filter_map(|step| pool_report(snapshot, step, overrides))
        .collect();
    json!({ "names": names, "tenant": tenant, "pools": pools })
}

fn family(v4: bool) -> &'static str {
    if v4 { "A" } else { "AAAA" }
}

fn region_report(rule: Option<RegionKey>, sites: &[String]) -> Value {
    let (kind, key) = match rule {
        Some(RegionKey::Country(code)) => ("country", Some(code.as_str().to_string())),
        Some(RegionKey::Continent(code)) => ("continent", Some(code.as_str().to_string())),
        Some(RegionKey::Default) => ("default", None),
        None => ("none", None),
    };
    json!({ "rule": kind, "key": key, "sites": sites })
}

fn pool_report(snapshot: &Snapshot, step: &PoolStep, overrides: &Overrides) -> Option<Value> {
    let zone = snapshot.zone_by_name(&step.zone)?;
    let z = &zone.zone;
    let def = z.pools.get(usize::from(step.pool))?;
    let admissions = zone.admissions(step.pool, step.v4)?;
    let site_name = |idx: SiteIdx| {
        z.sites
            .get(usize::from(idx))
            .map_or_else(String::new, |s| s.name.clone())
    };
    let shard = z.sharding.as_ref().and_then(|s| {
        let at = s.shards.iter().position(|(pool, _)| *pool == step.pool)?;
        s.shard_names.get(at).cloned()
    });
    let candidates = admissions
        .sites
        .iter()
        .filter(|(_, a)| a.is_candidate())
        .count();
    let failed = match (admissions.all_down, def.when_all_down) {
        (false, _) => Value::Null,
        (true, AllDown::All) => json!("open"),
        (true, AllDown::None) => json!("closed"),
    };
    let total_weight: u64 = step.weights.iter().map(|(_, w)| w).sum();
    let zone_overrides = overrides.get(&z.name);
    let mut sites = Vec::new();
    for &(idx, admission) in &admissions.sites {
        let name = site_name(idx);
        let ov = zone_overrides.and_then(|o| o.get(&name)).copied();
        let state = match zone.states.get(usize::from(idx)) {
            Some(SiteState::Up) | None => "up",
            Some(SiteState::Down) => "down",
            Some(SiteState::Drain) => "drained",
        };
        let rank = step.order.iter().position(|&s| s == idx).map(|r| r + 1);
        let answered: Vec<String> = step
            .answered
            .iter()
            .filter(|(s, _)| *s == idx)
            .map(|(_, ip)| ip.to_string())
            .collect();
        let mut site = serde_json::Map::new();
        site.insert("site".into(), json!(name));
        site.insert("state".into(), json!(state));
        site.insert("override".into(), json!(ov));
        site.insert("candidate".into(), json!(admission.is_candidate()));
        site.insert("rank".into(), json!(rank));
        site.insert("answered".into(), json!(answered));
        match def.policy {
            Policy::Geo => {
                let km = step
                    .distances
                    .iter()
                    .find(|(s, _)| *s == idx)
                    .and_then(|(_, km)| *km);
                site.insert(
                    "distance_km".into(),
                    json!(km.map(|km| (km * 10.0).round() / 10.0)),
                );
            }
            Policy::Weighted => {
                let weight = z.facts.get(usize::from(idx)).map(|f| f.weight);
                site.insert("weight".into(), json!(weight));
                let drawn = step.weights.iter().find(|(s, _)| *s == idx);
                let share = drawn
                    .filter(|_| total_weight > 0)
                    .map(|(_, w)| (*w as f64 / total_weight as f64 * 1000.0).round() / 1000.0);
                site.insert("share".into(), json!(share));
            }
            Policy::Hash => {
                let score = step.scores.iter().find(|(s, _)| *s == idx);
                site.insert(
                    "score".into(),
                    json!(score.map(|(_, score)| format!("{score:016x}"))),
                );
            }
            Policy::Fastest => {
                let latency = zone.pools.live.latency(idx);
                site.insert("latency_ms".into(), json!(latency.map(ms)));
                let place = zone
                    .pools
                    .live
                    .order(usize::from(step.pool))
                    .iter()
                    .position(|&s| s == idx)
                    .map(|p| p + 1);
                site.insert("latency_rank".into(), json!(place));
            }
            Policy::LeastLoaded => {
                let reported = zone.pools.live.reported_weight(idx);
                let configured = z.facts.get(usize::from(idx)).map(|f| f.weight);
                site.insert("reported_weight".into(), json!(reported));
                site.insert("configured_weight".into(), json!(configured));
                let drawn = step.weights.iter().find(|(s, _)| *s == idx);
                site.insert("weight".into(), json!(drawn.map(|(_, w)| *w)));
                let share = drawn
                    .filter(|_| total_weight > 0)
                    .map(|(_, w)| (*w as f64 / total_weight as f64 * 1000.0).round() / 1000.0);
                site.insert("share".into(), json!(share));
            }
            Policy::RoundRobin | Policy::Failover | Policy::Script => {}
        }
        let failed_closed = admissions.all_down && def.when_all_down == AllDown::None;
        let live = live_reason(zone, step.pool, def.policy, idx);
        let reason = site_reason(step, def.answers, failed_closed, idx, admission, ov, live);
        site.insert("reason".into(), json!(reason));
        sites.push(Value::Object(site));
    }
    let region = match (def.policy, &step.region) {
        (Policy::Geo, Some((rule, list))) => {
            let names: Vec<String> = list.iter().map(|&s| site_name(s)).collect();
            region_report(*rule, &names)
        }
        _ => Value::Null,
    };
    Some(json!({
        "zone": z.name,
        "name": step.owner.to_string(),
        "additional": step.additional,
        "family": family(step.v4),
        "pool": def.name,
        "shard": shard,
        "policy": def.policy.as_str(),
        "answers": def.answers,
        "ttl": def.ttl,
        "when_all_down": match def.when_all_down {
            AllDown::All => "all",
            AllDown::None => "none",
        },
        "all_down": admissions.all_down,
        "failed": failed,
        "candidates": candidates,
        "region": region,
        "rotation": step.rotation,
        "ecs_scope": step.scope,
        "script": step.script.as_ref().map(script_report),
        "sites": sites,
    }))
}

/// A script pool's run: whether the script decided, or why the pool fell back.
fn script_report(report: &crate::script::Report) -> Value {
    json!({
        "decided": report.failure.is_none(),
        "fallback": report.failure.as_ref().map(|_| report.fallback.as_str()),
        "error": report.failure.as_ref().map(|f| f.kind.as_str()),
        "message": report.failure.as_ref().map(|f| f.message.clone()),
        "unknown_sites": report.unknown,
    })
}

/// Milliseconds, to the microsecond.
fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// How a live-signal policy placed a site, from the signals its pool was compiled
/// from: its latency and what hysteresis kept (`fastest`), or where its weight came
/// from (`least-loaded`).
fn live_reason(zone: &ZoneSnap, pool: PoolIdx, policy: Policy, site: SiteIdx) -> Option<String> {
    let live = &zone.pools.live;
    let name = |s: SiteIdx| {
        zone.zone
            .sites
            .get(usize::from(s))
            .map_or_else(String::new, |s| s.name.clone())
    };
    match policy {
        Policy::Fastest => {
            let Some(latency) = live.latency(site) else {
                return Some(
                    "no probe latency yet: after the measured sites, in configured order".into(),
                );
            };
            let order = live.order(usize::from(pool));
            let place = order.iter().position(|&s| s == site).unwrap_or(order.len());
            let before = order.get(..place).unwrap_or_default();
            let after = order.get(place + 1..).unwrap_or_default();
            // A site ahead of a faster one holds its place by hysteresis, and the
            // other way round.
            let kept = after
                .iter()
                .find(|&&s| live.latency(s).is_some_and(|l| l < latency));
            let held = before
                .iter()
                .find(|&&s| live.latency(s).is_some_and(|l| l > latency));
            let margin = ms(crate::policy::fastest::margin(latency));
            Some(match (kept, held) {
                (Some(&s), _) => format!(
                    "latency {} ms; kept ahead of {} ({} ms) by hysteresis: a site must be faster by more than 10% and 1 ms to take a place",
                    ms(latency),
                    name(s),
                    live.latency(s).map_or(0.0, ms)
                ),
                (None, Some(&s)) => format!(
                    "latency {} ms; behind {} ({} ms), which keeps its place until beaten by more than {margin} ms",
                    ms(latency),
                    name(s),
                    live.latency(s).map_or(0.0, ms)
                ),
                (None, None) => format!("latency order: {} ms", ms(latency)),
            })
        }
        Policy::LeastLoaded => Some(match live.reported_weight(site) {
            Some(w) => format!("drawn at random by weight {w}, reported by the backend"),
            None => "drawn at random by the configured weight (no weight reported)".into(),
        }),
        _ => None,
    }
}

/// Why a site was answered or skipped, in words.
fn site_reason(
    step: &PoolStep,
    answers: usize,
    failed_closed: bool,
    site: SiteIdx,
    admission: Admission,
    ov: Option<Override>,
    live: Option<String>,
) -> String {
    let rank = step.order.iter().position(|&s| s == site).map(|r| r + 1);
    let answered = step.answered.iter().any(|(s, _)| *s == site);
    let family = if step.v4 { "IPv4" } else { "IPv6" };
    match admission {
        Admission::NoAddress => format!("skipped: no {family} address"),
        Admission::Drained => "skipped: drained (never answered, even when failing open)".into(),
        Admission::ZeroWeight => {
            "skipped: the backend reports weight 0 (drained by its own report; not down)".into()
        }
        Admission::Down => {
            let why = match ov {
                Some(Override::Down) => "overridden down",
                _ => "down (health checks)",
            };
            if failed_closed {
                format!(
                    "skipped: {why}; every site is down and the pool fails closed (when_all_down = \"none\")"
                )
            } else {
                format!("skipped: {why}")
            }
        }
        Admission::Up | Admission::FailOpen => {
            let open = if admission == Admission::FailOpen {
                "down, but every site is down and the pool fails open; "
            } else {
                ""
            };
            let up = match ov {
                Some(Override::Up) => "overridden up; ",
                _ => "",
            };
            let how = match (&step.region, step.rotation) {
                (Some((rule, list)), _) if list.contains(&site) => match rule {
                    Some(RegionKey::Country(c)) => {
                        format!("in the region rule of country {}", c.as_str())
                    }
                    Some(RegionKey::Continent(c)) => {
                        format!("in the region rule of continent {}", c.as_str())
                    }
                    _ => "in the default region rule".to_string(),
                },
                (Some((_, list)), _) if step.distances.iter().any(|(_, km)| km.is_some()) => {
                    if list.is_empty() {
                        "nearest first".to_string()
                    } else {
                        "nearest after the region rule's sites".to_string()
                    }
                }
                (Some(_), _) => "configured order (no distance known)".to_string(),
                (None, Some(start)) => format!("rotation starts at candidate {}", start + 1),
                (None, None) if !step.weights.is_empty() => "drawn at random by weight".to_string(),
                (None, None) if !step.scores.is_empty() => "by score, highest first".to_string(),
                (None, None) => "configured order".to_string(),
            };
            let how = live.unwrap_or(how);
            match (rank, answered) {
                (Some(rank), true) => format!("{up}{open}answered (rank {rank}: {how})"),
                (Some(rank), false) => format!(
                    "{up}{open}skipped: beyond answers = {answers} (rank {rank}; the addresses of better sites filled the answer)"
                ),
                (None, _) => format!("{up}{open}skipped: beyond answers = {answers}"),
            }
        }
    }
}

/// `GET /v1/explain`'s answer as the tables `geolb explain` prints.
pub fn render(v: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{} {} for client {}\n",
        text(&v["question"]["name"]),
        text(&v["question"]["type"]),
        text(&v["client"]),
    ));
    let geoip = &v["geoip"];
    if geoip["database"] == true {
        let place = &geoip["place"];
        let at = if place.is_null() {
            "unknown place".to_string()
        } else {
            format!(
                "country {}, continent {}, at {}, {}",
                text(&place["country"]),
                text(&place["continent"]),
                text(&place["lat"]),
                text(&place["lon"]),
            )
        };
        out.push_str(&format!(
            "geoip: {at} (network /{})\n",
            text(&geoip["network_prefix"])
        ));
    } else {
        out.push_str("geoip: no database\n");
    }
    out.push_str(&format!(
        "rcode {}, {}authoritative, ECS scope /{}\n",
        text(&v["rcode"]),
        if v["authoritative"] == true {
            ""
        } else {
            "not "
        },
        text(&v["ecs_scope"]),
    ));
    for section in ["answer", "authority", "additional"] {
        let records = v[section].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if records.is_empty() {
            continue;
        }
        out.push_str(&format!("{section}:\n"));
        for record in records {
            out.push_str(&format!("  {}\n", text(record)));
        }
    }
    let decision = &v["decision"];
    let tenant = &decision["tenant"];
    if !tenant.is_null() {
        let listed = if tenant["listed"] == true {
            ""
        } else {
            " (not in the map: the default shard)"
        };
        out.push_str(&format!(
            "\ntenant {} of zone {}: shard {}{listed}\n",
            text(&tenant["tenant"]),
            text(&tenant["zone"]),
            text(&tenant["shard"]),
        ));
    }
    let pools = decision["pools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if pools.is_empty() {
        out.push_str("\nno pool answered this question\n");
    }
    for pool in pools {
        let which = if pool["shard"].is_null() {
            format!("pool {}", text(&pool["pool"]))
        } else {
            format!("shard {}", text(&pool["shard"]))
        };
        let additional = if pool["additional"] == true {
            " (additional section)"
        } else {
            ""
        };
        out.push_str(&format!(
            "\n{which} of zone {} for {} {}{additional}: policy {}, answers {}, when_all_down = {}\n",
            text(&pool["zone"]),
            text(&pool["name"]),
            text(&pool["family"]),
            text(&pool["policy"]),
            text(&pool["answers"]),
            text(&pool["when_all_down"]),
        ));
        match pool["failed"].as_str() {
            Some("open") => out.push_str(
                "every site is down: the pool fails open (down sites answer, drained ones never)\n",
            ),
            Some("closed") => {
                out.push_str("every site is down: the pool fails closed (no address)\n")
            }
            _ => {}
        }
        let script = &pool["script"];
        if script["decided"] == true {
            out.push_str("script: decided the order\n");
        } else if script["decided"] == false {
            out.push_str(&format!(
                "script: failed ({}: {}); the fallback policy {} ordered the sites\n",
                text(&script["error"]),
                text(&script["message"]),
                text(&script["fallback"]),
            ));
        }
        let region = &pool["region"];
        if !region.is_null() {
            let sites: Vec<String> = region["sites"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let sites = if sites.is_empty() {
                "no candidate".to_string()
            } else {
                sites.join(", ")
            };
            match region["rule"].as_str() {
                Some("none") => {
                    out.push_str("region rule: none applies; sites by distance from the client\n")
                }
                Some(rule) => out.push_str(&format!(
                    "region rule: {rule}{} -> {sites}, then the rest by distance\n",
                    region["key"]
                        .as_str()
                        .map(|k| format!(" {k}"))
                        .unwrap_or_default(),
                )),
                None => {}
            }
        }
        if let Some(start) = pool["rotation"].as_u64() {
            out.push_str(&format!(
                "rotation: the next query starts at candidate {}\n",
                start + 1
            ));
        }
        let policy = pool["policy"].as_str().unwrap_or("");
        let metric = match policy {
            "geo" => "DISTANCE_KM",
            "weighted" | "least-loaded" => "WEIGHT (SHARE)",
            "hash" => "SCORE",
            "fastest" => "LATENCY_MS",
            _ => "",
        };
        let value = |site: &Value| match policy {
            "geo" => text(&site["distance_km"]),
            "fastest" => text(&site["latency_ms"]),
            "weighted" | "least-loaded" => match site["share"].as_f64() {
                Some(share) => format!("{} ({:.1}%)", text(&site["weight"]), share * 100.0),
                None => text(&site["weight"]),
            },
            "hash" => text(&site["score"]),
            _ => String::new(),
        };
        let sites = pool["sites"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let name_width = sites
            .iter()
            .map(|s| text(&s["site"]).len())
            .chain([4])
            .max()
            .unwrap_or(4);
        out.push_str(&format!(
            "  {:<name_width$}  {:<7}  {:<8}  {:<16}  {:<4}  {}\n",
            "SITE", "STATE", "OVERRIDE", metric, "RANK", "RESULT"
        ));
        for site in sites {
            let addresses: Vec<String> = site["answered"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let result = if addresses.is_empty() {
                text(&site["reason"])
            } else {
                format!("{}: {}", text(&site["reason"]), addresses.join(" "))
            };
            out.push_str(&format!(
                "  {:<name_width$}  {:<7}  {:<8}  {:<16}  {:<4}  {}\n",
                text(&site["site"]),
                text(&site["state"]),
                text(&site["override"]),
                value(site),
                text(&site["rank"]),
                result,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::str::FromStr;
    use std::sync::Arc;

    use super::*;
    use crate::app::{self, Settings};
    use crate::dns::Ecs;
    use crate::snapshot;

    fn repo(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// The example zone (and `extra` zone files), all sites up, with the demo GeoIP db.
    fn example(extra: &[PathBuf]) -> Snapshot {
        let mut zones = vec![repo("zones/example.test.toml")];
        zones.extend_from_slice(extra);
        let settings = Settings {
            zones,
            geoip: Some(repo("geoip/demo.mmdb")),
            ..Settings::default()
        };
        let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
        app::snapshot_all_up(&loaded)
    }

    /// The same snapshot with sites in other states, compiled as the compiler does.
    fn with_states(snap: &Snapshot, states: &[(&str, SiteState)]) -> Snapshot {
        let zones: Vec<ZoneSnap> = snap
            .zones
            .iter()
            .map(|zone| {
                let list: Vec<SiteState> = zone
                    .zone
                    .sites
                    .iter()
                    .map(|site| {
                        states
                            .iter()
                            .find(|(name, _)| *name == site.name)
                            .map_or(SiteState::Up, |(_, s)| *s)
                    })
                    .collect();
                ZoneSnap {
                    zone: zone.zone.clone(),
                    pools: Arc::new(snapshot::compile_pools(&zone.zone, &list)),
                    states: list.into(),
                    tenants: zone.tenants.clone(),
                }
            })
            .collect();
        Snapshot::new(zones, snap.geo.clone())
    }

    /// Explains `name`/`qtype` for a client subnet (as an ECS option) or address.
    fn explain(snap: &Snapshot, name: &str, qtype: RecordType, client: &str) -> (Answer, Value) {
        explain_with(snap, name, qtype, client, &Overrides::new())
    }

    fn explain_with(
        snap: &Snapshot,
        name: &str,
        qtype: RecordType,
        client: &str,
        overrides: &Overrides,
    ) -> (Answer, Value) {
        let client = match client.split_once('/') {
            Some((addr, prefix)) => Client::new(
                IpAddr::from([127, 0, 0, 1]),
                Some(Ecs {
                    addr: addr.parse().unwrap(),
                    source_prefix: prefix.parse().unwrap(),
                }),
            ),
            None => Client::new(client.parse().unwrap(), None),
        };
        let name = Name::from_str(name).unwrap();
        let (answer, decision) = decide(snap, &name, qtype, &client);
        let report = report(snap, &decision, overrides);
        (answer, report)
    }

    fn site<'v>(pool: &'v Value, name: &str) -> &'v Value {
        pool["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == name)
            .unwrap_or_else(|| panic!("no site {name} in {pool}"))
    }

    fn reason(pool: &Value, name: &str) -> String {
        site(pool, name)["reason"].as_str().unwrap().to_string()
    }

    /// Every answered address is in the answer section, and the other way round.
    fn answered(answer: &Answer, pool: &Value) -> Vec<String> {
        let from_sites: Vec<String> = pool["sites"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["rank"].as_u64().map(|r| (r, s)))
            .collect::<std::collections::BTreeMap<_, _>>()
            .values()
            .flat_map(|s| s["answered"].as_array().unwrap().clone())
            .map(|ip| ip.as_str().unwrap().to_string())
            .collect();
        let in_answer: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(from_sites, in_answer, "{pool}");
        from_sites
    }

    #[test]
    fn geo_reports_distances_and_the_region_rule() {
        let snap = example(&[]);
        // Tokyo: no rule for JP or AS; nearest first.
        let (answer, report) = explain(&snap, "www.example.test.", RecordType::A, "127.0.4.0/24");
        let pool = &report["pools"][0];
        assert_eq!(pool["pool"], "web");
        assert_eq!(pool["policy"], "geo");
        assert_eq!(pool["family"], "A");
        assert_eq!(pool["region"]["rule"], "none");
        assert_eq!(pool["ecs_scope"], 24);
        assert_eq!(pool["failed"], Value::Null);
        let km = |name: &str| site(pool, name)["distance_km"].as_f64().unwrap();
        // Tokyo to Singapore is about 5,300 km, to Amsterdam 9,300, to New York 10,850.
        assert!((km("sin1") - 5312.0).abs() < 30.0, "{pool}");
        assert!((km("ams1") - 9290.0).abs() < 30.0, "{pool}");
        assert!((km("nyc1") - 10850.0).abs() < 30.0, "{pool}");
        assert_eq!(site(pool, "sin1")["rank"], 1);
        assert_eq!(site(pool, "ams1")["rank"], 2);
        assert_eq!(site(pool, "nyc1")["rank"], Value::Null);
        assert!(reason(pool, "sin1").contains("nearest"), "{pool}");
        assert_eq!(reason(pool, "nyc1"), "skipped: beyond answers = 2");
        assert_eq!(answered(&answer, pool), ["203.0.113.10", "192.0.2.10"]);

        // London: the GB rule sends it to ams1 first, then the nearest.
        let (_, report) = explain(&snap, "www.example.test.", RecordType::A, "127.0.30.1/32");
        let pool = &report["pools"][0];
        assert_eq!(pool["region"]["rule"], "country");
        assert_eq!(pool["region"]["key"], "GB");
        assert_eq!(pool["region"]["sites"], json!(["ams1"]));
        assert!(
            reason(pool, "ams1").contains("region rule of country GB"),
            "{pool}"
        );
        assert_eq!(site(pool, "nyc1")["rank"], 2);

        // Unknown place: the default rule, no distances.
        let (_, report) = explain(&snap, "www.example.test.", RecordType::A, "127.0.0.1");
        let pool = &report["pools"][0];
        assert_eq!(pool["region"]["rule"], "default");
        assert_eq!(pool["region"]["sites"], json!(["nyc1", "ams1"]));
        assert_eq!(site(pool, "ams1")["distance_km"], Value::Null);
        assert_eq!(site(pool, "nyc1")["rank"], 1);
        assert!(reason(pool, "nyc1").contains("default region rule"));
    }

    #[test]
    fn weighted_reports_weights_and_shares() {
        let snap = example(&[]);
        let (answer, report) = explain(&snap, "api.example.test.", RecordType::A, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(pool["policy"], "weighted");
        for (name, weight, share) in [("ams1", 3, 0.5), ("nyc1", 2, 0.333), ("sin1", 1, 0.167)] {
            assert_eq!(site(pool, name)["weight"], weight, "{pool}");
            assert_eq!(site(pool, name)["share"], share, "{pool}");
        }
        let ranked: Vec<&Value> = pool["sites"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["rank"] == 1)
            .collect();
        assert_eq!(ranked.len(), 1, "{pool}");
        assert!(ranked[0]["reason"].as_str().unwrap().contains("by weight"));
        assert_eq!(answered(&answer, pool).len(), 1);
        // A drained site has no share: it is not in the draw.
        let snap = with_states(&snap, &[("ams1", SiteState::Drain)]);
        let (_, report) = explain(&snap, "api.example.test.", RecordType::A, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(site(pool, "ams1")["share"], Value::Null);
        assert_eq!(site(pool, "nyc1")["share"], 0.667);
    }

    #[test]
    fn hash_reports_scores_highest_first() {
        let snap = example(&[]);
        let (answer, report) = explain(&snap, "login.example.test.", RecordType::A, "127.0.9.7");
        let pool = &report["pools"][0];
        assert_eq!(pool["policy"], "hash");
        assert_eq!(pool["ecs_scope"], 24);
        let mut scores: Vec<(String, String)> = pool["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["score"].as_str().unwrap().to_string(),
                    s["site"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(scores.iter().all(|(s, _)| s.len() == 16), "{pool}");
        scores.sort();
        let best = &scores.last().unwrap().1;
        assert_eq!(site(pool, best)["rank"], 1, "{pool}");
        assert!(reason(pool, best).contains("by score"));
        assert_eq!(answered(&answer, pool).len(), 1);
        // The same /24 gets the same scores.
        let (_, again) = explain(&snap, "login.example.test.", RecordType::A, "127.0.9.200");
        assert_eq!(again["pools"][0]["sites"], pool["sites"]);
    }

    #[test]
    fn failover_and_a_down_site() {
        let snap = example(&[]);
        let (_, report) = explain(&snap, "db.example.test.", RecordType::A, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(pool["policy"], "failover");
        assert_eq!(site(pool, "nyc1")["rank"], 1);
        assert!(reason(pool, "nyc1").contains("configured order"));
        assert_eq!(reason(pool, "ams1"), "skipped: beyond answers = 1");
        // nyc1 down by its probes, then by an override.
        let down = with_states(&snap, &[("nyc1", SiteState::Down)]);
        let (answer, report) = explain(&down, "db.example.test.", RecordType::A, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(site(pool, "nyc1")["state"], "down");
        assert_eq!(site(pool, "nyc1")["candidate"], false);
        assert_eq!(reason(pool, "nyc1"), "skipped: down (health checks)");
        assert_eq!(answered(&answer, pool), ["192.0.2.10"]);
        let mut overrides = Overrides::new();
        overrides
            .entry("example.test".into())
            .or_default()
            .insert("nyc1".into(), Override::Down);
        let (_, report) = explain_with(
            &down,
            "db.example.test.",
            RecordType::A,
            "127.0.4.1",
            &overrides,
        );
        let pool = &report["pools"][0];
        assert_eq!(site(pool, "nyc1")["override"], "down");
        assert_eq!(reason(pool, "nyc1"), "skipped: overridden down");
    }

    #[test]
    fn round_robin_reports_the_next_rotation_without_taking_it() {
        let snap = example(&[]);
        let (_, first) = explain(&snap, "cdn.example.test.", RecordType::A, "127.0.4.1");
        let (_, second) = explain(&snap, "cdn.example.test.", RecordType::A, "127.0.4.1");
        let pool = &first["pools"][0];
        assert_eq!(pool["policy"], "round-robin");
        assert_eq!(pool["rotation"], 0);
        assert_eq!(first, second, "explaining must not turn the rotation");
        assert_eq!(site(pool, "ams1")["rank"], 1);
        assert_eq!(site(pool, "nyc1")["rank"], 2);
        assert!(reason(pool, "ams1").contains("rotation"));
        // A query turns it; explain then shows the next turn.
        let client = Client::new(IpAddr::from([127, 0, 4, 1]), None);
        let name = Name::from_str("cdn.example.test.").unwrap();
        lookup::lookup(&snap, &name, RecordType::A, &client);
        let (answer, report) = explain(&snap, "cdn.example.test.", RecordType::A, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(pool["rotation"], 1);
        assert_eq!(answered(&answer, pool), ["198.51.100.10", "203.0.113.10"]);
    }

    #[test]
    fn a_drained_site_is_skipped_even_when_failing_open() {
        let snap = example(&[]);
        let snap = with_states(
            &snap,
            &[
                ("ams1", SiteState::Drain),
                ("nyc1", SiteState::Down),
                ("sin1", SiteState::Down),
            ],
        );
        let (answer, report) = explain(&snap, "www.example.test.", RecordType::A, "127.0.4.0/24");
        let pool = &report["pools"][0];
        assert_eq!(pool["all_down"], true);
        assert_eq!(pool["failed"], "open");
        assert_eq!(site(pool, "ams1")["state"], "drained");
        assert!(
            reason(pool, "ams1").starts_with("skipped: drained"),
            "{pool}"
        );
        assert!(reason(pool, "sin1").contains("fails open"), "{pool}");
        assert!(reason(pool, "sin1").contains("answered (rank 1"), "{pool}");
        assert_eq!(answered(&answer, pool), ["203.0.113.10", "198.51.100.10"]);
    }

    #[test]
    fn when_all_down_open_and_closed() {
        let snap = example(&[]);
        let all_down = with_states(
            &snap,
            &[
                ("ams1", SiteState::Down),
                ("nyc1", SiteState::Down),
                ("sin1", SiteState::Down),
            ],
        );
        // web fails open (the default): down sites answer.
        let (answer, report) = explain(&all_down, "www.example.test.", RecordType::A, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(pool["when_all_down"], "all");
        assert_eq!(pool["failed"], "open");
        assert_eq!(pool["candidates"], 3);
        assert_eq!(answered(&answer, pool).len(), 2);
        // db fails closed: NODATA, and every site says why.
        let (answer, report) = explain(&all_down, "db.example.test.", RecordType::A, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(pool["when_all_down"], "none");
        assert_eq!(pool["failed"], "closed");
        assert_eq!(pool["candidates"], 0);
        assert!(answer.answers.is_empty());
        for name in ["nyc1", "ams1"] {
            assert!(reason(pool, name).contains("fails closed"), "{pool}");
        }
        // Up again: neither.
        let (_, report) = explain(&snap, "db.example.test.", RecordType::A, "127.0.4.1");
        assert_eq!(report["pools"][0]["failed"], Value::Null);
    }

    #[test]
    fn a_tenant_name_reports_tenant_shard_and_pool() {
        let snap = example(&[]);
        let (answer, report) = explain(
            &snap,
            "Acme.tenant.example.test.",
            RecordType::A,
            "127.0.4.1",
        );
        assert_eq!(
            report["tenant"],
            json!({"zone": "example.test", "name": "acme.tenant.example.test.",
                   "tenant": "acme", "shard": "us", "listed": true})
        );
        // The CNAME to the shard is followed to the shard's pool.
        assert_eq!(report["names"][1]["name"], "us.shard.example.test.");
        let pool = &report["pools"][0];
        assert_eq!(pool["shard"], "us");
        assert_eq!(pool["name"], "us.shard.example.test.");
        assert_eq!(pool["policy"], "failover");
        assert_eq!(site(pool, "nyc1")["rank"], 1);
        assert_eq!(answer.answers.len(), 2);
        // Not a tenant, no default shard: NXDOMAIN, and no tenant.
        let (_, report) = explain(
            &snap,
            "nobody.tenant.example.test.",
            RecordType::A,
            "127.0.4.1",
        );
        assert_eq!(report["tenant"], Value::Null);
        assert_eq!(report["pools"], json!([]));
    }

    /// `answer = "address"`: the tenant's shard pool answers at the tenant name itself;
    /// an unlisted tenant is served by `default_shard`, and the report says so.
    #[test]
    fn an_address_tenant_and_the_default_shard() {
        let dir = tempfile::tempdir().unwrap();
        let zone = dir.path().join("ad.test.toml");
        std::fs::write(
            &zone,
            "[zone]\norigin = \"ad.test\"\nns = [\"ns1\"]\n\
             [[records]]\nname = \"ns1\"\ntype = \"A\"\ndata = \"192.0.2.53\"\n\
             [sites.a]\naddresses = [\"192.0.2.1\"]\n\
             [sites.b]\naddresses = [\"192.0.2.2\", \"192.0.2.3\"]\n\
             [sharding]\ntenants = \"ad.tenants\"\nanswer = \"address\"\ndefault_shard = \"s2\"\n\
             [shards.s1]\nsites = [\"a\"]\n[shards.s2]\nsites = [\"b\"]\nanswers = 1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ad.tenants"), "acme = \"s1\"\n").unwrap();
        let snap = example(&[zone]);
        let (answer, report) = explain(&snap, "acme.tenant.ad.test.", RecordType::A, "127.0.4.1");
        assert_eq!(report["tenant"]["shard"], "s1");
        assert_eq!(report["tenant"]["listed"], true);
        let pool = &report["pools"][0];
        assert_eq!(pool["name"], "acme.tenant.ad.test.");
        assert_eq!(pool["shard"], "s1");
        assert_eq!(answered(&answer, pool), ["192.0.2.1"]);
        let (answer, report) = explain(&snap, "zork.tenant.ad.test.", RecordType::A, "127.0.4.1");
        assert_eq!(report["tenant"]["tenant"], "zork");
        assert_eq!(report["tenant"]["shard"], "s2");
        assert_eq!(report["tenant"]["listed"], false);
        let pool = &report["pools"][0];
        // Site b has two addresses and the shard answers one: the second is left out.
        assert_eq!(answered(&answer, pool), ["192.0.2.2"]);
        assert_eq!(reason(pool, "b"), "answered (rank 1: configured order)");
    }

    #[test]
    fn a_site_without_an_address_of_the_family_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let zone = dir.path().join("v4only.test.toml");
        std::fs::write(
            &zone,
            r#"
[zone]
origin = "v4only.test"
ttl = 300
ns = ["ns1"]
soa = { mname = "ns1", rname = "hostmaster", refresh = 3600, retry = 600, expire = 1209600, minimum = 60 }

[[records]]
name = "ns1"
type = "A"
data = "192.0.2.53"

[sites.four]
addresses = ["192.0.2.1"]

[sites.both]
addresses = ["192.0.2.2", "2001:db8::2"]

[pools.www]
names = ["www"]
sites = ["four", "both"]
policy = "failover"
answers = 2
"#,
        )
        .unwrap();
        let snap = example(&[zone]);
        let (answer, report) = explain(&snap, "www.v4only.test.", RecordType::AAAA, "127.0.4.1");
        let pool = &report["pools"][0];
        assert_eq!(pool["family"], "AAAA");
        assert_eq!(reason(pool, "four"), "skipped: no IPv6 address");
        assert_eq!(answered(&answer, pool), ["2001:db8::2"]);
        // For A, both answer.
        let (answer, report) = explain(&snap, "www.v4only.test.", RecordType::A, "127.0.4.1");
        assert_eq!(
            answered(&answer, &report["pools"][0]),
            ["192.0.2.1", "192.0.2.2"]
        );
    }
}
