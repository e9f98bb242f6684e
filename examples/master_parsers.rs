//! geolb's master-file reader beside hickory-proto's `Parser` on the same file: the
//! measurement behind reading master files ourselves (see ARCHITECTURE.md, `zonefile`).
//!
//!     cargo run --release --example master_parsers -- FILE.zone ORIGIN

use std::path::PathBuf;
use std::time::Instant;

use hickory_proto::rr::Name;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: master_parsers FILE.zone ORIGIN");
        std::process::exit(2);
    };
    let path = PathBuf::from(path);
    let Ok(origin) = Name::from_ascii(format!("{}.", origin.trim_end_matches('.'))) else {
        eprintln!("bad origin");
        std::process::exit(2);
    };
    for round in 1..=3 {
        let start = Instant::now();
        let mut errors = Vec::new();
        let ours = geolb::zonefile::read(&path, &origin, None, &mut errors);
        let ours_time = start.elapsed();
        let records = ours.records.len();
        drop(ours);

        let start = Instant::now();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let parsed = hickory_proto::serialize::txt::Parser::new(
            text.as_str(),
            Some(path.clone()),
            Some(origin.clone()),
        )
        .parse();
        let theirs_time = start.elapsed();
        let theirs = match &parsed {
            Ok((_, sets)) => sets
                .values()
                .map(|set| set.records_without_rrsigs().count())
                .sum(),
            Err(err) => {
                eprintln!("hickory-proto: {err}");
                0
            }
        };
        drop(parsed);
        println!(
            "round {round}: zonefile::read {records} records in {:.3} s ({} errors); hickory-proto Parser {theirs} records in {:.3} s",
            ours_time.as_secs_f64(),
            errors.len(),
            theirs_time.as_secs_f64()
        );
    }
}
