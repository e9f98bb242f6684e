//! Where the time of loading one zone goes: reading, TOML parsing and key checks,
//! validation into the model, and compiling the static part of the snapshot.
//!
//!     cargo run --release --example load_phases -- ZONE_FILE [ZONE_FILE...]

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    for path in &paths {
        let start = Instant::now();
        let zone = if path.extension().is_some_and(|e| e == "zone") {
            geolb::model::zone_from_master(path)
        } else {
            let source = match geolb::config::Source::read(path) {
                Ok(source) => source,
                Err(err) => {
                    eprintln!("{err}");
                    std::process::exit(1);
                }
            };
            let read = start.elapsed();
            let parse = Instant::now();
            let raw = geolb::config::parse_zone_file(&source);
            println!(
                "{}: read {:.3} s, TOML parse and key check {:.3} s",
                path.display(),
                read.as_secs_f64(),
                parse.elapsed().as_secs_f64()
            );
            drop(raw);
            geolb::model::zone_from_source(&source)
        };
        let loaded = start.elapsed();
        let mut zone = match zone {
            Ok(zone) => zone,
            Err(errors) => {
                for error in errors {
                    eprintln!("{error}");
                }
                std::process::exit(1);
            }
        };
        let records = std::mem::take(&mut zone.records);
        let n_records = records.len();
        let compile = Instant::now();
        let compiled = geolb::snapshot::compile_static(&zone, records);
        println!(
            "{}: {} records, loaded (read, parse, validate) {:.3} s, compile_static {:.3} s, {} nodes",
            path.display(),
            n_records,
            loaded.as_secs_f64(),
            compile.elapsed().as_secs_f64(),
            compiled.nodes.len()
        );
    }
}
