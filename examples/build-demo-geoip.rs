//! Rebuilds the demo GeoIP database from its source:
//! `cargo run --example build-demo-geoip [SOURCE [OUTPUT]]`, by default
//! `geoip/demo.toml` to `geoip/demo.mmdb` in this package.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("geoip");
    let mut args = std::env::args_os().skip(1);
    let source = args
        .next()
        .map_or_else(|| dir.join("demo.toml"), PathBuf::from);
    let output = args
        .next()
        .map_or_else(|| dir.join("demo.mmdb"), PathBuf::from);

    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let bytes = geolb::geo::demo::build(&text)
        .with_context(|| format!("cannot build from {}", source.display()))?;
    std::fs::write(&output, &bytes)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!("wrote {} ({} bytes)", output.display(), bytes.len());
    Ok(())
}
