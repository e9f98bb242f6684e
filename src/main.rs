//! The `geolb` command: argument parsing, wiring and signals. Thin by design.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use geolb::app::{self, Settings};
use geolb::server::{self, ServerOptions};

#[derive(Parser)]
#[command(
    name = "geolb",
    version,
    about = "Authoritative GeoDNS load-balancing server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the zones over UDP and TCP.
    Serve(ServeArgs),
    /// Validate everything `serve` would load, print every error, exit 0 or 1.
    Check(CommonArgs),
    /// Show, move or remove tenants through a running server's admin API.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Look at the fleet through a running node's admin API.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// What a client would get for a question from a running server, and why: the
    /// pool or tenant and shard, the policy, every site with its state and distance,
    /// weight or score, the region rule, and why each site was answered or skipped.
    Explain {
        /// The name asked.
        name: String,
        /// The type asked.
        #[arg(default_value = "A")]
        rtype: String,
        /// The client: an address (the query's source), or address/prefix (an EDNS
        /// Client Subnet option from a resolver at 127.0.0.1); default 127.0.0.1.
        #[arg(long, value_name = "IP")]
        client: Option<String>,
        #[command(flatten)]
        target: AdminAddr,
        /// Print the JSON the admin API returned instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Check that a running server answers DNS over UDP and TCP (and its admin API,
    /// when it has one); exit 0 or 1. For container health checks.
    Health(HealthArgs),
    /// DNSSEC key management.
    #[command(subcommand)]
    Dnssec(DnssecCommand),
}

#[derive(Subcommand)]
enum DnssecCommand {
    /// Generate a key pair in BIND's format (K<zone>+<alg>+<tag>.key and .private),
    /// created, published and active now; prints its base name like dnssec-keygen.
    Keygen {
        /// The zone the key is for.
        zone: String,
        /// The directory to write the key files into.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// 13 (ECDSA P-256 SHA-256) or 15 (Ed25519).
        #[arg(long, default_value = "13", value_parser = ["13", "15"])]
        algorithm: String,
        /// A key-signing key (flags 257, the SEP bit), whose DS goes to the parent.
        #[arg(long)]
        ksk: bool,
    },
    /// Print the DS records of a signed zone's key-signing keys (SHA-256), for its
    /// parent: the zone is loaded as `check` loads it, with its `[dnssec] keys`.
    Ds {
        /// The zone's origin.
        zone: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
struct HealthArgs {
    /// The DNS address to ask (default: the first `listen` in --config, a wildcard
    /// address read as loopback, else 127.0.0.1:5353).
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// How long to wait for each answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    timeout: f64,
    #[command(flatten)]
    target: AdminAddr,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Nodes, their revisions and lag, configuration digests, and etcd's members.
    Status {
        #[command(flatten)]
        target: AdminAddr,
        /// Print the JSON the admin API returned instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct AdminAddr {
    /// The admin API address of the running server (default: `admin` in --config).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// A file holding the bearer token (default: `admin_token_file` in --config).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// geolb.toml to read `admin` and `admin_token_file` from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Print the shard a tenant is served from.
    Get {
        tenant: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Move (or add) a tenant to a shard; returns once the move is durable and served.
    Move {
        tenant: String,
        shard: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Remove a tenant from the map; returns once that is durable and served.
    Delete {
        tenant: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Apply every line of a tenant map file as one atomic batch (bulk moves, or a
    /// fleet's map); the file is checked first and every bad line reported.
    Import {
        file: PathBuf,
        /// Also remove the tenants the file does not list: the zone's map becomes the file.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Print the zone's tenant map as served now, in the map file format.
    Export {
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Args)]
struct AdminTarget {
    #[command(flatten)]
    addr: AdminAddr,
    /// The zone (default: the only zone with a tenant map).
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Zone files (*.toml) or directories of them.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    zones: Vec<PathBuf>,
    /// MaxMind DB file (GeoIP2/GeoLite2 City or Country, DB-IP lite).
    #[arg(long, value_name = "FILE")]
    geoip: Option<PathBuf>,
    /// geolb.toml with the same settings; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to answer on, UDP and TCP (repeatable); default 127.0.0.1:5353.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Address of the HTTP admin API.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Serve(args) => serve(args),
        Command::Tenants(command) => match tenants(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Health(args) => match health(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Cluster(ClusterCommand::Status { target, json }) => {
            match cluster_status(&target, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dnssec(command) => match dnssec(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Explain {
            name,
            rtype,
            client,
            target,
            json,
        } => match explain(&name, &rtype, client.as_deref(), &target, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

fn explain(
    name: &str,
    rtype: &str,
    client: Option<&str>,
    target: &AdminAddr,
    as_json: bool,
) -> Result<(), String> {
    let admin = Admin::for_addr(target, std::time::Duration::from_secs(30))?;
    let mut path = format!(
        "/v1/explain?name={}&type={}",
        query_escape(name),
        query_escape(rtype)
    );
    if let Some(client) = client {
        path.push_str(&format!("&client={}", query_escape(client)));
    }
    let view = admin.call("GET", &path, None)?;
    if as_json {
        println!("{view:#}");
        return Ok(());
    }
    print!("{}", geolb::explain::render(&view));
    Ok(())
}

/// `geolb dnssec ...`: key files are written with the real clock; the library itself
/// takes the time as an argument.
fn dnssec(command: DnssecCommand) -> Result<(), String> {
    use geolb::dnssec::{Algorithm, keygen};
    match command {
        DnssecCommand::Keygen {
            zone,
            dir,
            algorithm,
            ksk,
        } => {
            let algorithm = algorithm
                .parse()
                .ok()
                .and_then(Algorithm::from_number)
                .ok_or_else(|| format!("algorithm {algorithm} is not supported (13 or 15)"))?;
            let origin = hickory_proto::rr::Name::from_ascii(&zone)
                .map_err(|error| format!("bad zone name {zone:?}: {error}"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|error| format!("the clock is before 1970: {error}"))?;
            let now = u32::try_from(now.as_secs())
                .map_err(|_| "the clock is past 2106, beyond DNSSEC's u32 times".to_owned())?;
            let base = keygen::keygen(&dir, &origin, algorithm, ksk, now)?;
            println!("{base}");
            Ok(())
        }
        DnssecCommand::Ds { zone, common } => dnssec_ds(&zone, &common),
    }
}

/// `geolb dnssec ds ZONE --zones ...`: the DS lines of the zone's key-signing keys
/// published now.
fn dnssec_ds(zone: &str, common: &CommonArgs) -> Result<(), String> {
    let settings = settings(common).map_err(|_| "cannot read the settings".to_owned())?;
    let loaded = app::load(&settings).map_err(|errors| errors.to_string())?;
    let wanted = zone.trim_end_matches('.').to_ascii_lowercase();
    let found = loaded
        .model
        .zones
        .iter()
        .find(|z| z.origin.to_ascii().trim_end_matches('.') == wanted)
        .ok_or_else(|| format!("no zone {zone} in the zones given"))?;
    let signer = found
        .signer
        .as_ref()
        .ok_or_else(|| format!("zone {zone} is not signed (no [dnssec] table)"))?;
    let lines = signer.keys().ds_text(geolb::dns::secure::unix_now());
    if lines.is_empty() {
        return Err(format!(
            "zone {zone} has no key-signing key published now (flags 257)"
        ));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Percent-encodes a query parameter (RFC 3986: all but the unreserved characters).
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn tenants(command: TenantsCommand) -> Result<(), String> {
    use serde_json::json;
    let (target, method, tenant, body) = match &command {
        TenantsCommand::Import {
            file,
            replace,
            target,
        } => return tenants_import(file, *replace, target),
        TenantsCommand::Export { target } => return tenants_export(target),
        TenantsCommand::Get { tenant, target } => (target, "GET", tenant, None),
        TenantsCommand::Move {
            tenant,
            shard,
            target,
        } => (target, "PUT", tenant, Some(json!({ "shard": shard }))),
        TenantsCommand::Delete { tenant, target } => (target, "DELETE", tenant, None),
    };
    let admin = Admin::for_addr(&target.addr, std::time::Duration::from_secs(30))?;
    let zone = admin.zone(target)?;
    let path = format!("/v1/zones/{zone}/tenants/{tenant}");
    let reply = admin.call(method, &path, body.as_ref())?;
    let text = |key: &str| reply[key].as_str().unwrap_or("-").to_string();
    match command {
        TenantsCommand::Get { .. } => println!(
            "{} {} -> {} ({})",
            text("zone"),
            text("tenant"),
            text("shard"),
            text("shard_name")
        ),
        TenantsCommand::Move { .. } => println!(
            "{} {}: {} -> {}",
            text("zone"),
            text("tenant"),
            reply["previous"].as_str().unwrap_or("(new)"),
            text("shard")
        ),
        TenantsCommand::Delete { .. } => println!(
            "{} {}: removed (was {})",
            text("zone"),
            text("tenant"),
            text("previous")
        ),
        // Answered above.
        TenantsCommand::Import { .. } | TenantsCommand::Export { .. } => {}
    }
    Ok(())
}

/// A running server's admin API, as a command line tool reaches it.
struct Admin {
    addr: SocketAddr,
    token: Option<String>,
    timeout: std::time::Duration,
}

impl Admin {
    /// The address and token from flags, else from geolb.toml.
    fn new(
        admin: Option<SocketAddr>,
        token_file: Option<&PathBuf>,
        config: Option<&PathBuf>,
        timeout: std::time::Duration,
    ) -> Result<Admin, String> {
        let settings = match config {
            Some(path) => Settings::from_file(path).map_err(|e| e.to_string())?,
            None => Settings::default(),
        };
        let addr = admin.or(settings.admin).ok_or(
            "no admin API address: give --admin ADDR (or --config with `admin`)".to_string(),
        )?;
        let token = match token_file.or(settings.admin_token_file.as_ref()) {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Admin {
            addr,
            token,
            timeout,
        })
    }

    fn for_addr(target: &AdminAddr, timeout: std::time::Duration) -> Result<Admin, String> {
        Admin::new(
            target.admin,
            target.token_file.as_ref(),
            target.config.as_ref(),
            timeout,
        )
    }

    /// One JSON request; an answer other than 200 is the API's error message.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let reply = geolb::admin_client::request(
            self.addr,
            self.token.as_deref(),
            method,
            path,
            body,
            self.timeout,
        )?;
        if reply.status != 200 {
            return Err(reply.error_message());
        }
        Ok(reply.body)
    }

    /// A GET whose answer is not JSON.
    fn get_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let (status, body) = geolb::admin_client::request_bytes(
            self.addr,
            self.token.as_deref(),
            "GET",
            path,
            self.timeout,
        )?;
        if status != 200 {
            return Err(String::from_utf8_lossy(&body).into_owned());
        }
        Ok(body)
    }

    /// The zone a tenants command is about: `--zone`, else the only sharded zone.
    fn zone(&self, target: &AdminTarget) -> Result<String, String> {
        if let Some(zone) = &target.zone {
            return Ok(zone.trim_end_matches('.').to_string());
        }
        let zones = self.call("GET", "/v1/zones", None)?;
        let sharded: Vec<String> = zones["zones"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|z| z["sharding"].as_bool() == Some(true))
            .filter_map(|z| z["zone"].as_str().map(str::to_string))
            .collect();
        match sharded.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!("no zone served at {} has [sharding]", self.addr)),
            many => Err(format!(
                "several zones have tenants ({}): choose one with --zone",
                many.join(", ")
            )),
        }
    }
}

fn cluster_status(target: &AdminAddr, as_json: bool) -> Result<(), String> {
    let admin = Admin::for_addr(target, std::time::Duration::from_secs(30))?;
    let view = admin.call("GET", "/v1/cluster", None)?;
    if as_json {
        println!("{view:#}");
        return Ok(());
    }
    print!("{}", geolb::fleet::render_view(&view));
    Ok(())
}

fn health(args: &HealthArgs) -> Result<(), String> {
    use geolb::service::{Transport, local_target, probe_dns};
    let timeout = std::time::Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or("--timeout must be a positive number of seconds")?;
    let target = &args.target;
    let settings = match &target.config {
        Some(path) => Settings::from_file(path).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    let dns = args
        .dns
        .or(settings.listen.first().copied())
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5353)));
    let dns = local_target(dns);
    for transport in [Transport::Udp, Transport::Tcp] {
        let took = probe_dns(dns, transport, timeout)?;
        println!("ok: dns {transport} {dns} answered in {took:.1?}");
    }
    if target.admin.is_some() || settings.admin.is_some() {
        let admin = Admin::new(
            target.admin.or(settings.admin).map(local_target),
            target.token_file.as_ref(),
            target.config.as_ref(),
            timeout,
        )?;
        admin.call("GET", "/v1/health", None)?;
        println!("ok: admin {} answered", admin.addr);
    }
    Ok(())
}

fn tenants_export(target: &AdminTarget) -> Result<(), String> {
    let admin = Admin::for_addr(&target.addr, std::time::Duration::from_secs(300))?;
    let zone = admin.zone(target)?;
    let map = admin.get_bytes(&format!("/v1/zones/{zone}/tenant-map"))?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&map)
        .map_err(|e| format!("cannot write the map: {e}"))
}

fn tenants_import(file: &PathBuf, replace: bool, target: &AdminTarget) -> Result<(), String> {
    use geolb::tenants::{ShardNames, parse_map};
    let admin = Admin::for_addr(&target.addr, std::time::Duration::from_secs(300))?;
    let zone = admin.zone(target)?;
    let summary = admin.call("GET", &format!("/v1/zones/{zone}/tenants"), None)?;
    let names: Vec<String> = summary["shards"]
        .as_object()
        .map(|shards| shards.keys().cloned().collect())
        .unwrap_or_default();
    let shards = ShardNames::new(&names).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let table = parse_map(file, &text, &shards).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("{} error(s):\n{}", lines.len(), lines.join("\n"))
    })?;
    let mut changes: Vec<serde_json::Value> = table
        .iter()
        .map(|(tenant, idx)| serde_json::json!({ "tenant": tenant, "shard": shards.name(idx) }))
        .collect();
    if replace {
        let served = admin.get_bytes(&format!("/v1/zones/{zone}/tenant-map"))?;
        let served = parse_map(
            std::path::Path::new("(served map)"),
            &String::from_utf8_lossy(&served),
            &shards,
        )
        .map_err(|_| "cannot read the map the server returned".to_string())?;
        for (tenant, _) in served.iter() {
            if table.get(tenant).is_none() {
                changes.push(serde_json::json!({ "tenant": tenant, "shard": null }));
            }
        }
    }
    let body = serde_json::json!({ "changes": changes });
    let done = admin.call("POST", &format!("/v1/zones/{zone}/tenants"), Some(&body))?;
    let count = |key: &str| done[key].as_u64().unwrap_or(0);
    println!(
        "{zone}: {} changes applied as one batch ({} added, {} moved, {} removed, {} unchanged)",
        count("applied"),
        count("added"),
        count("moved"),
        count("removed"),
        count("unchanged")
    );
    Ok(())
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // hickory-proto logs some malformed input at `warn` while parsing; geolb checks
    // what it can by hand first, and keeps the rest of the library's per-packet lines
    // out of the log unless RUST_LOG names it.
    let names_hickory = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("hickory"));
    if !names_hickory && let Ok(directive) = "hickory_proto=error".parse() {
        filter = filter.add_directive(directive);
    }
    // stdout carries only the `listening` lines; logs go to stderr.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn settings(common: &CommonArgs) -> Result<Settings, ExitCode> {
    let mut settings = match &common.config {
        Some(path) => Settings::from_file(path).map_err(|errors| {
            eprintln!("{errors}");
            ExitCode::FAILURE
        })?,
        None => Settings::default(),
    };
    if !common.zones.is_empty() {
        settings.zones = common.zones.clone();
    }
    if common.geoip.is_some() {
        settings.geoip = common.geoip.clone();
    }
    if settings.zones.is_empty() {
        eprintln!("error: no zones given (use --zones PATH or `zones` in --config)");
        return Err(ExitCode::FAILURE);
    }
    Ok(settings)
}

fn check(args: &CommonArgs) -> ExitCode {
    let settings = match settings(args) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match app::load(&settings) {
        Ok(loaded) => {
            println!(
                "ok: {} zones, {} names",
                loaded.model.zones.len(),
                loaded.model.n_names()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut settings = match settings(&args.common) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    if !args.listen.is_empty() {
        settings.listen = args.listen;
    }
    if settings.listen.is_empty() {
        settings.listen = vec![SocketAddr::from(([127, 0, 0, 1], 5353))];
    }
    if args.admin.is_some() {
        settings.admin = args.admin;
    }
    let loaded = match app::load_for_serving(&settings, &[]) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, loaded: app::Loaded) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP sent right after the `listening` lines must reload, not
    // take the default action (exit).
    let signals = Signals::install()?;
    raise_fd_limit();
    let defaults = ServerOptions::default();
    let mut options = ServerOptions {
        udp_sockets: settings.udp_sockets.unwrap_or(defaults.udp_sockets),
        tcp_max_connections: settings
            .tcp_max_connections
            .unwrap_or(defaults.tcp_max_connections),
        tcp_max_connections_per_ip: settings
            .tcp_max_connections_per_ip
            .unwrap_or(defaults.tcp_max_connections_per_ip),
        tcp_idle_timeout: settings
            .tcp_idle_timeout
            .unwrap_or(defaults.tcp_idle_timeout),
        rate_limit: None,
        dnstap: None,
    };
    let admin_defaults = geolb::admin::AdminLimits::default();
    let admin_limits = geolb::admin::AdminLimits {
        max_connections: settings
            .admin_max_connections
            .unwrap_or(admin_defaults.max_connections),
        header_timeout: settings
            .admin_header_timeout
            .unwrap_or(admin_defaults.header_timeout),
        request_timeout: settings
            .admin_request_timeout
            .unwrap_or(admin_defaults.request_timeout),
    };
    let tcp_registry = server::tcp::registry(&options);
    let mut bound = Vec::new();
    for addr in &settings.listen {
        let b = server::bind(*addr, &options)
            .map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))?;
        bound.push(b);
    }
    let n_zones = loaded.model.zones.len();
    let n_names = loaded.model.n_names();
    let admin = match settings.admin {
        Some(addr) => Some(geolb::admin::bind(addr, settings.admin_token_file.as_deref()).await?),
        None => None,
    };
    let mut control = app::start(settings.clone(), loaded)?;
    if let Some(cluster) = settings.cluster.clone() {
        tracing::info!(node = %cluster.node, etcd = ?cluster.etcd, prefix = %cluster.prefix, "fleet mode: tenants and overrides are shared through etcd");
        let fleet = geolb::fleet::Fleet::start(
            cluster,
            &app::state_dir(&settings),
            &settings.zones,
            control.events.clone(),
            control.tenants.clone(),
        )
        .map_err(|e| anyhow::anyhow!("[cluster]: {e}"))?;
        control.fleet = Some(fleet);
    }
    tracing::info!(zones = n_zones, names = n_names, "zones loaded");
    options.rate_limit = rate_limiting(&settings.rate_limit, &control);
    options.dnstap = start_dnstap(&settings, &control)?;
    let mut lines = String::new();
    if let Some((listener, token)) = admin {
        let addr = listener.local_addr()?;
        lines.push_str(&format!("listening admin {addr}\n"));
        tracing::info!(%addr, "admin API listening");
        tokio::spawn(geolb::admin::serve(
            listener,
            token,
            control.clone(),
            admin_limits,
            tcp_registry.stats.clone(),
        ));
    }
    for b in bound {
        lines.push_str(&format!(
            "listening udp {}\nlistening tcp {}\n",
            b.addr, b.addr
        ));
        tracing::info!(addr = %b.addr, "listening");
        server::serve(b, control.shared.clone(), &options, &tcp_registry);
    }
    print_stdout(&lines);
    // Only now, with every socket listening and announced, is the service ready.
    geolb::service::notify(&format!(
        "READY=1\nSTATUS=serving {n_zones} zones, {n_names} names"
    ));
    let stopped = signals.wait(control).await;
    if let Some(dnstap) = options.dnstap {
        // Ends the stream cleanly (STOP/FINISH), so the reader closes its file.
        let _ = tokio::task::spawn_blocking(move || dnstap.shutdown()).await;
    }
    stopped
}

/// The dnstap writer, when `dnstap` is set.
fn start_dnstap(
    settings: &Settings,
    control: &app::Control,
) -> anyhow::Result<Option<geolb::dnstap::Dnstap>> {
    let Some(config) = &settings.dnstap else {
        return Ok(None);
    };
    let identity = settings.server_identity();
    let dnstap = geolb::dnstap::Dnstap::start(
        config,
        &identity.identity,
        &identity.version,
        control.stats.dnstap.clone(),
    )
    .map_err(|e| anyhow::anyhow!("cannot start the dnstap writer: {e}"))?;
    tracing::info!(socket = %config.socket.display(), sample = config.sample, "dnstap on");
    Ok(Some(dnstap))
}

/// Raises the soft limit on open files to the hard limit, as knot and nginx do: every
/// TCP and admin connection is a descriptor, and the usual soft limit (1024) is below
/// what `tcp_max_connections` and `admin_max_connections` may ask for.
#[cfg(target_os = "linux")]
fn raise_fd_limit() {
    match geolb::server::raise_nofile_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_fd_limit() {}

/// The UDP rate limit, logged once; `None` when it is off.
fn rate_limiting(
    config: &geolb::rrl::RateLimit,
    control: &app::Control,
) -> Option<server::RateLimiting> {
    if !config.enabled() {
        tracing::info!("response rate limiting off");
        return None;
    }
    let exempt: Vec<String> = config.exempt.iter().map(ToString::to_string).collect();
    tracing::info!(
        responses_per_second = config.responses_per_second,
        slip = config.slip,
        ipv4_prefix = config.ipv4_prefix,
        ipv6_prefix = config.ipv6_prefix,
        exempt = %exempt.join(" "),
        "response rate limiting on (udp)"
    );
    Some(server::RateLimiting {
        config: std::sync::Arc::new(config.clone()),
        counters: control.stats.rrl.clone(),
    })
}

/// Prints and flushes at once: tests and scripts wait for these lines.
fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(self, control: app::Control) -> anyhow::Result<()> {
        let Signals {
            mut hup,
            mut term,
            mut int,
        } = self;
        wait_for_signals(&mut hup, &mut term, &mut int, control).await
    }
}

async fn wait_for_signals(
    hup: &mut tokio::signal::unix::Signal,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
    control: app::Control,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                geolb::service::notify(&geolb::service::reloading_message());
                // Errors are logged by the compiler; the old snapshot stays.
                let status = match control.reload().await {
                    Ok(_) => "serving the reloaded zones",
                    Err(_) => "reload failed; serving the previous zones",
                };
                geolb::service::notify(&format!("READY=1\nSTATUS={status}"));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    geolb::service::notify("STOPPING=1\nSTATUS=shutting down");
    // Every acknowledged tenant change is already in a journal. Refusing new changes
    // first (after those in flight are answered), then folding the journals into the
    // map files, leaves files that hold every acknowledged change.
    control.stop_tenant_changes().await;
    if let Some(fleet) = &control.fleet {
        fleet.leave().await;
    }
    let stores: Vec<_> = control
        .tenants
        .read()
        .map(|index| index.values().cloned().collect())
        .unwrap_or_default();
    for zt in stores {
        let compacted =
            tokio::time::timeout(std::time::Duration::from_secs(30), zt.store.compact_now()).await;
        match compacted {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(zone = %zt.zone, %error, "tenant map not compacted; its journal keeps the changes")
            }
            Err(_) => {
                tracing::warn!(zone = %zt.zone, "tenant map compaction timed out; its journal keeps the changes")
            }
        }
    }
    Ok(())
}
