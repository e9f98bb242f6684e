use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use rhai::{Array, Dynamic, ImmutableString, Map};

use super::*;

fn compile(text: &str) -> Result<Script, LoadError> {
    Script::compile(Path::new("t.rhai"), text, Policy::Failover)
}

fn site(idx: SiteIdx, name: &'static str, candidate: bool) -> SiteFact<'static> {
    SiteFact {
        idx,
        name,
        state: if candidate {
            SiteState::Up
        } else {
            SiteState::Down
        },
        candidate,
        weight: 10 + u32::from(idx),
        latency_ms: None,
        distance_km: Some(123.44),
        country: Code2::parse("de"),
        continent: Code2::parse("eu"),
    }
}

fn input(query: &str) -> Input<'static> {
    Input {
        client: ClientFacts::new(None, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)), 24, true),
        query: query.to_string(),
        v4: true,
        sites: vec![
            site(0, "fra", true),
            site(1, "ams", true),
            site(2, "nyc", false),
        ],
    }
}

fn strings(names: &[&str]) -> Dynamic {
    let a: Array = names
        .iter()
        .map(|n| Dynamic::from(ImmutableString::from(*n)))
        .collect();
    Dynamic::from_array(a)
}

#[test]
fn result_conversion() {
    let sites = input("x").sites;
    // Order kept, repeats dropped, non-candidates skipped, unknown names reported.
    let ran = order_from(&strings(&["ams", "nyc", "bogus", "ams", "fra"]), &sites).unwrap();
    assert_eq!(ran.order, vec![1, 0]);
    assert_eq!(ran.unknown, vec!["bogus".to_string()]);
    assert_eq!(ran.unknown_count, 1);
    // Not an array, an array of non-strings, nothing usable: failures of their kinds.
    let kind = |d: Dynamic| order_from(&d, &sites).unwrap_err().kind;
    assert_eq!(kind(Dynamic::from_int(3)), ErrorKind::Result);
    assert_eq!(
        kind(Dynamic::from(ImmutableString::from("fra"))),
        ErrorKind::Result
    );
    assert_eq!(
        kind(Dynamic::from_array(vec![Dynamic::from_int(1)])),
        ErrorKind::Result
    );
    assert_eq!(kind(strings(&[])), ErrorKind::Empty);
    assert_eq!(kind(strings(&["nyc", "bogus"])), ErrorKind::Empty);
}

#[test]
fn client_and_site_conversion() {
    let place = crate::geo::Place::new(
        Some(crate::geo::Coord {
            lat: 50.1,
            lon: 8.7,
        }),
        Code2::parse("de"),
        Code2::parse("eu"),
    );
    let c = ClientFacts::new(
        Some(&place),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)),
        20,
        false,
    );
    assert_eq!(c.network, IpAddr::V4(Ipv4Addr::new(198, 51, 96, 0)));
    let d = c.to_dynamic();
    let m = d.read_lock::<Map>().unwrap();
    let s = |k: &str| m[k].clone().into_string().unwrap();
    assert_eq!(s("country"), "DE");
    assert_eq!(s("continent"), "EU");
    assert_eq!(s("network"), "198.51.96.0/20");
    assert_eq!(m["prefix"].as_int().unwrap(), 20);
    assert!(!m["ecs"].as_bool().unwrap());
    assert_eq!(m["lat"].as_float().unwrap(), 50.1);
    // An unknown place: unit values, and the whole address space without a database.
    let c = ClientFacts::new(None, IpAddr::V6(Ipv6Addr::LOCALHOST), 0, true);
    let d = c.to_dynamic();
    let m = d.read_lock::<Map>().unwrap();
    assert!(m["country"].is_unit() && m["lat"].is_unit());
    assert_eq!(m["network"].clone().into_string().unwrap(), "::/0");
    // Sites: every field a script reads.
    let d = sites_dynamic(&input("x").sites);
    let a = d.read_lock::<Array>().unwrap();
    let nyc = a[2].read_lock::<Map>().unwrap();
    assert_eq!(nyc["name"].clone().into_string().unwrap(), "nyc");
    assert_eq!(nyc["state"].clone().into_string().unwrap(), "down");
    assert!(!nyc["candidate"].as_bool().unwrap());
    assert_eq!(nyc["weight"].as_int().unwrap(), 12);
    assert_eq!(nyc["distance_km"].as_float().unwrap(), 123.4);
    assert!(nyc["latency_ms"].is_unit());
    assert_eq!(nyc["country"].clone().into_string().unwrap(), "DE");
}

#[test]
fn runs_in_the_scripts_order() {
    let s = compile(
        r#"
        let out = [];
        for c in candidates { if c.name != "fra" { out.push(c.name); } }
        if client.ecs && query.starts_with("www.") && qtype == "A" { out.push("fra"); }
        out
        "#,
    )
    .unwrap();
    let ran = s.run(&input("www.example.test")).unwrap();
    assert_eq!(ran.order, vec![1, 0]);
    let ran = s.run(&input("api.example.test")).unwrap();
    assert_eq!(ran.order, vec![1]);
}

#[test]
fn rand_is_seeded_by_the_query_name() {
    let s = compile(r#"let r = rand(1000); if r < 500 { ["fra", "ams"] } else { ["ams", "fra"] }"#)
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..64 {
        let q = format!("n{i}.example.test");
        let a = s.run(&input(&q)).unwrap().order;
        assert_eq!(a, s.run(&input(&q)).unwrap().order, "same name, same draw");
        seen.insert(a);
    }
    assert_eq!(seen.len(), 2, "different names draw differently");
    let f = compile("let x = rand(); if x >= 0.0 && x < 1.0 { [\"fra\"] } else { [] }").unwrap();
    assert_eq!(f.run(&input("a")).unwrap().order, vec![0]);
}

#[test]
fn in_network_and_hash() {
    assert!(in_network("198.51.100.0/24", "198.51.0.0/16").unwrap());
    assert!(!in_network("198.51.0.0/16", "198.51.100.0/24").unwrap());
    assert!(in_network("198.51.100.0/24", "0.0.0.0/0").unwrap());
    assert!(!in_network("2001:db8::/32", "198.51.0.0/16").unwrap());
    assert!(in_network("2001:db8:1::/48", "2001:db8::/32").unwrap());
    assert!(in_network("192.0.2.1/32", "192.0.2.1").unwrap());
    assert!(in_network("nonsense", "0.0.0.0/0").is_err());
    assert!(in_network("192.0.2.0/33", "0.0.0.0/0").is_err());
    let s = compile(r#"if in_network(client.network, "198.51.100.0/22") && hash("a") == hash("a") && hash("a") >= 0 { ["nyc", "ams"] } else { ["fra"] }"#).unwrap();
    assert_eq!(s.run(&input("q")).unwrap().order, vec![1]);
}

#[test]
fn failures_by_kind() {
    let kind = |text: &str| compile(text).unwrap().run(&input("q")).unwrap_err().kind;
    assert_eq!(kind("loop {}"), ErrorKind::Budget);
    assert_eq!(
        kind("let x = 0; while true { x += 1; } []"),
        ErrorKind::Budget
    );
    assert_eq!(kind("fn f(n) { f(n + 1) } f(0)"), ErrorKind::Limit);
    assert_eq!(kind("let s = \"x\"; loop { s += s; }"), ErrorKind::Limit);
    assert_eq!(kind("throw \"no\""), ErrorKind::Runtime);
    assert_eq!(kind("candidates[99].name"), ErrorKind::Runtime);
    assert_eq!(kind("42"), ErrorKind::Result);
    assert_eq!(kind("[\"bogus\"]"), ErrorKind::Empty);
}

#[test]
fn load_errors_name_the_line() {
    let err = |text: &str| compile(text).err().unwrap();
    let e = err("let a = 1;\nimport \"fs\" as fs;\n[]");
    assert_eq!(e.line, 2, "{e:?}");
    assert!(e.message.contains("import"), "{e:?}");
    let e = err("let a = 1;\n\nlet f = open(\"/etc/passwd\");\n[]");
    assert_eq!(e.line, 3, "{e:?}");
    assert!(e.message.contains("unknown function `open`"), "{e:?}");
    let e = err("let t = timestamp();\n[]");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("`timestamp`"), "{e:?}");
    let e = err("[]\n\neval(\"1\")");
    assert_eq!(e.line, 3, "{e:?}");
    assert!(e.message.contains("eval"), "{e:?}");
    let e = err("print(\"x\");\n[]");
    assert!(e.message.contains("print"), "{e:?}");
    let e = err("candidates.read_file()");
    assert!(e.message.contains("read_file"), "{e:?}");
    // Undeclared variables fail at load too.
    let e = err("[\"a\"]\n\nclinet.country");
    assert_eq!(e.line, 3, "{e:?}");
    // A syntax error.
    let e = err("let x = ;");
    assert_eq!(e.line, 1);
    // What scripts use compiles: own functions, closures, methods, operators.
    compile(
        r#"
        fn near(c) { c.distance_km != () && c.distance_km < 1000.0 }
        let up = candidates.filter(|c| c.state == "up" && near(c));
        up.sort(|a, b| a.weight - b.weight);
        let names = up.map(|c| c.name);
        if names.len() == 0 || type_of(client.country) == "()" { return candidates.map(|c| c.name); }
        names + [`${client.country}`]
        "#,
    )
    .unwrap();
}

#[test]
fn query_names() {
    assert_eq!(
        query_name(b"\x03www\x07example\x04test\0"),
        "www.example.test"
    );
    assert_eq!(query_name(b"\0"), "");
    assert_eq!(query_name(b"\x03a.b\x01\xff\0"), "a\\046b.\\255");
    // Malformed keys stop where they break.
    assert_eq!(query_name(b"\x05ab"), "");
}

/// The example scripts shipped in `zones/` compile and do what their comments say.
#[test]
fn example_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let load = |name: &str| Script::load(&dir.join(name), Policy::Geo).unwrap();
    let eu = |lat: f64, lon: f64, continent: &str| {
        crate::geo::Place::new(
            Some(crate::geo::Coord { lat, lon }),
            None,
            Code2::parse(continent),
        )
    };
    let sites = |km: [f64; 3]| {
        let mut s = vec![
            site(0, "nyc1", true),
            site(1, "ams1", true),
            site(2, "sin1", true),
        ];
        for (i, c) in ["NA", "EU", "AS"].iter().enumerate() {
            s[i].continent = Code2::parse(c);
            s[i].distance_km = Some(km[i]);
        }
        s
    };
    let names = |script: &Script, input: &Input<'_>| -> Vec<&'static str> {
        let ran = script.run(input).unwrap();
        ran.order
            .iter()
            .map(|&i| ["nyc1", "ams1", "sin1"][usize::from(i)])
            .collect()
    };
    // eu- tenants: EU first, else nearest first.
    let s = load("eu-tenants.rhai");
    let mut input = input("eu-acme.tenant.example.test");
    input.sites = sites([500.0, 6000.0, 9000.0]);
    assert_eq!(names(&s, &input), ["ams1", "nyc1", "sin1"]);
    input.query = "acme.tenant.example.test".into();
    assert_eq!(names(&s, &input), ["nyc1", "ams1", "sin1"]);
    // Network overrides, by the client's GeoIP network.
    let s = load("network-override.rhai");
    let addr = |a: &str| a.parse::<IpAddr>().unwrap();
    input.client = ClientFacts::new(None, addr("127.0.1.5"), 24, true);
    assert_eq!(names(&s, &input), ["nyc1", "ams1", "sin1"]);
    input.client = ClientFacts::new(None, addr("127.0.5.5"), 24, true);
    assert_eq!(names(&s, &input), ["sin1", "ams1", "nyc1"]);
    input.client = ClientFacts::new(None, addr("10.0.0.1"), 8, false);
    assert_eq!(names(&s, &input), ["nyc1", "ams1", "sin1"]);
    // Weighted inside geo: the continent's sites first, shared by weight; then nearest.
    let s = load("weighted-in-geo.rhai");
    input.sites = sites([6000.0, 500.0, 9000.0]);
    input.sites.push(SiteFact {
        idx: 3,
        name: "fra1",
        continent: Code2::parse("EU"),
        weight: 3,
        distance_km: Some(400.0),
        ..site(3, "fra1", true)
    });
    input.sites[1].weight = 1;
    input.client = ClientFacts::new(Some(&eu(50.0, 5.0, "EU")), addr("127.0.1.5"), 24, false);
    let mut first = std::collections::BTreeMap::new();
    for i in 0..400 {
        input.query = format!("n{i}.example.test");
        let ran = s.run(&input).unwrap();
        assert_eq!(ran.order.len(), 4);
        assert!(
            matches!(ran.order[0], 1 | 3) && matches!(ran.order[1], 1 | 3),
            "{ran:?}"
        );
        assert_eq!(&ran.order[2..], &[0, 2], "the rest nearest first");
        *first.entry(ran.order[0]).or_insert(0) += 1;
    }
    // fra1 (weight 3) first for about 3/4 of the names: 300 expected, sd about 9.
    let fra = first.get(&3).copied().unwrap_or(0);
    assert!((250..=350).contains(&fra), "{first:?}");
}

/// The example in docs/zones.md ("Pool scripts"), with and without a known client.
#[test]
fn docs_example() {
    let s = compile(
        r#"
        let up = candidates.filter(|c| c.candidate);
        if client.lat != () {
            up.sort(|a, b| if a.distance_km < b.distance_km { -1 } else { 1 });
        }
        if query.starts_with("eu-") {
            up.filter(|c| c.continent == "EU").map(|c| c.name) + up.map(|c| c.name)
        } else {
            up.map(|c| c.name)
        }
        "#,
    )
    .unwrap();
    let mut input = input("eu-acme.example.test");
    input.sites[0].distance_km = Some(900.0);
    input.sites[1].distance_km = Some(100.0);
    input.sites[1].continent = Code2::parse("NA");
    // Unknown client: configured order, EU first.
    assert_eq!(s.run(&input).unwrap().order, vec![0, 1]);
    let place = crate::geo::Place::new(Some(crate::geo::Coord { lat: 1.0, lon: 2.0 }), None, None);
    input.client = ClientFacts::new(Some(&place), IpAddr::V4(Ipv4Addr::LOCALHOST), 8, false);
    input.query = "acme.example.test".into();
    assert_eq!(s.run(&input).unwrap().order, vec![1, 0]);
}
