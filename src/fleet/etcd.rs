//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/range`, `/v3/watch`, ...).
//!
//! The gateway is part of every etcd v3 server (3.4 and later serve it under `/v3/`)
//! and speaks the same messages as the gRPC API, as JSON with base64 keys and values
//! and 64-bit integers as strings. Using it keeps the build free of `protoc` and of a
//! gRPC stack; the fleet's traffic is small (writes, one watch, a lease keep-alive), so
//! JSON costs nothing that matters.
//!
//! Requests go to one endpoint at a time. A request that could not be sent at all (the
//! connection was refused or failed) moves to the next endpoint and is retried there;
//! a request that was sent and then failed or timed out is not retried, because its
//! outcome is unknown ([`EtcdError::Unknown`]): callers of writes decide.
//!
//! Invariant: nothing here panics on what etcd sends; every field is read with a
//! default or an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// What went wrong talking to etcd.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached: nothing was sent.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// The request was sent, but no answer came (a timeout or a broken connection):
    /// it may or may not have been applied.
    #[error("no answer from etcd: {0}")]
    Unknown(String),
    /// etcd answered with an error.
    #[error("etcd error: {0}")]
    Server(String),
    /// The revision asked for is older than etcd's last compaction.
    #[error("etcd has compacted revision {requested} (oldest kept: {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    /// The answer was not what the API promises.
    #[error("unexpected answer from etcd: {0}")]
    Protocol(String),
}

/// TLS and authentication for the connection.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// PEM certificate authorities to trust for https endpoints (else the platform's).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and key, for etcd's client certificate auth.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// User and password for etcd's own authentication.
    pub user: Option<(String, String)>,
    /// Deadline of one ordinary request.
    pub timeout: Duration,
}

/// One key-value pair as etcd stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A page of a range read.
#[derive(Clone, Debug)]
pub struct Range {
    pub kvs: Vec<Kv>,
    pub more: bool,
    /// The store's revision the read reflects.
    pub revision: i64,
    pub cluster_id: String,
}

/// One change seen by a watch.
#[derive(Clone, Debug)]
pub struct Event {
    pub deleted: bool,
    pub kv: Kv,
}

/// What a watch delivered in one message: events (in revision order, never splitting
/// one revision), or only the revision etcd has reached.
#[derive(Clone, Debug)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    pub revision: i64,
}

/// A write in a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
        range_end: Option<Vec<u8>>,
    },
}

/// A condition of a transaction.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key does not exist (its create revision is 0).
    Absent(Vec<u8>),
    /// The key's last modification is at this revision (0: absent).
    ModRevision(Vec<u8>, i64),
}

/// The client: endpoints, the HTTP connection pool, and the auth token.
#[derive(Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Arc<[String]>,
    current: Arc<AtomicUsize>,
    options: EtcdOptions,
    token: Arc<tokio::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// A client for `endpoints` (`http://host:port` or `https://host:port`).
    pub fn new(endpoints: &[String], options: EtcdOptions) -> Result<Etcd, String> {
        if endpoints.is_empty() {
            return Err("no etcd endpoints".into());
        }
        let tls = tls_config(&options)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(options.timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        Ok(Etcd {
            http,
            endpoints: endpoints.into(),
            current: Arc::default(),
            options,
            token: Arc::default(),
        })
    }

    /// The endpoints, as configured.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Moves on to the next endpoint: after a request failed in a way that suggests this
    /// member is cut off from its cluster.
    pub fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads keys in `[key, range_end)` (`range_end` `None`: the key alone) as of
    /// `revision` (0: now), at most `limit` (0: all).
    pub async fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        revision: i64,
        limit: i64,
    ) -> Result<Range, EtcdError> {
        self.range_with(key, range_end, revision, limit, false)
            .await
    }

    async fn range_with(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        revision: i64,
        limit: i64,
        keys_only: bool,
    ) -> Result<Range, EtcdError> {
        let mut body = json!({ "key": B64.encode(key) });
        if keys_only {
            body["keys_only"] = json!(true);
        }
        if let Some(end) = range_end {
            body["range_end"] = json!(B64.encode(end));
        }
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        if limit > 0 {
            body["limit"] = json!(limit.to_string());
        }
        let reply = self.call("/v3/kv/range", &body).await.map_err(|e| {
            // etcd says "mvcc: required revision has been compacted".
            match e {
                EtcdError::Server(m) if m.contains("compacted") => EtcdError::Compacted {
                    requested: revision,
                    compacted: 0,
                },
                other => other,
            }
        })?;
        let kvs = match reply.get("kvs") {
            Some(Value::Array(kvs)) => kvs.iter().map(parse_kv).collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(Range {
            kvs,
            more: reply.get("more").and_then(Value::as_bool).unwrap_or(false),
            revision: header_revision(&reply),
            cluster_id: reply
                .pointer("/header/cluster_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    }

    /// Every key under `prefix` as of one revision (0: now), read in pages.
    pub async fn range_prefix(&self, prefix: &[u8], revision: i64) -> Result<Range, EtcdError> {
        self.range_prefix_with(prefix, revision, false).await
    }

    /// The keys (without values) under `prefix` as of one revision (0: now).
    pub async fn keys_prefix(&self, prefix: &[u8], revision: i64) -> Result<Range, EtcdError> {
        self.range_prefix_with(prefix, revision, true).await
    }

    async fn range_prefix_with(
        &self,
        prefix: &[u8],
        revision: i64,
        keys_only: bool,
    ) -> Result<Range, EtcdError> {
        // Pages of keys; values are at most a staged chunk each, so a page stays within
        // what one answer should carry.
        const PAGE: i64 = 64;
        let end = prefix_end(prefix);
        let mut first = self
            .range_with(prefix, Some(&end), revision, PAGE, keys_only)
            .await?;
        let revision = first.revision;
        let mut more = first.more;
        while more {
            let Some(last) = first.kvs.last() else { break };
            let mut next_key = last.key.clone();
            next_key.push(0);
            let page = self
                .range_with(&next_key, Some(&end), revision, PAGE, keys_only)
                .await?;
            more = page.more;
            first.kvs.extend(page.kvs);
        }
        first.more = false;
        Ok(first)
    }

    /// Writes one key; returns the revision of the write.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let mut body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        let reply = self.call("/v3/kv/put", &body).await?;
        Ok(header_revision(&reply))
    }

    /// Deletes `[key, range_end)`; returns the revision after it and how many keys
    /// were deleted.
    pub async fn delete(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
    ) -> Result<(i64, i64), EtcdError> {
        let mut body = json!({ "key": B64.encode(key) });
        if let Some(end) = range_end {
            body["range_end"] = json!(B64.encode(end));
        }
        let reply = self.call("/v3/kv/deleterange", &body).await?;
        Ok((
            header_revision(&reply),
            int_field(&reply, "deleted").unwrap_or(0),
        ))
    }

    /// A transaction: if every comparison holds, `success` is applied, else `failure`.
    /// Returns whether the comparisons held, and the revision after it.
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<(bool, i64), EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => json!({
                    "key": B64.encode(key), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0",
                }),
                Compare::ModRevision(key, rev) => json!({
                    "key": B64.encode(key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": rev.to_string(),
                }),
            })
            .collect();
        let ops = |ops: &[Op]| -> Vec<Value> { ops.iter().map(op_json).collect() };
        let body = json!({ "compare": compare, "success": ops(success), "failure": ops(failure) });
        let reply = self.call("/v3/kv/txn", &body).await?;
        Ok((
            reply
                .get("succeeded")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            header_revision(&reply),
        ))
    }

    /// Grants a lease of `ttl` seconds; returns its ID.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        let reply = self
            .call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))
            .await?;
        int_field(&reply, "ID").ok_or_else(|| EtcdError::Protocol("lease grant without ID".into()))
    }

    /// Renews a lease; returns the TTL left (0 or less: the lease is gone).
    pub async fn lease_keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let reply = self
            .call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))
            .await?;
        let result = reply.get("result").unwrap_or(&reply);
        Ok(int_field(result, "TTL").unwrap_or(0))
    }

    /// Ends a lease now, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .await
            .map(|_| ())
    }

    /// The status of one endpoint: its version, DB size, leader and raft index.
    pub async fn status(&self, endpoint: &str) -> Result<Value, EtcdError> {
        let url = format!("{endpoint}/v3/maintenance/status");
        self.send(&url, &json!({}), Some(self.options.timeout))
            .await
    }

    /// Watches `[key, range_end)` from `start_revision`.
    pub async fn watch(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": B64.encode(key),
            "range_end": B64.encode(range_end),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }});
        let response = self.post("/v3/watch", &body, None).await?;
        let mut watch = Watch {
            response,
            buffer: Vec::new(),
        };
        // The first message says whether the watch was created, or why not.
        let first = watch.message().await?;
        let result = first.get("result").unwrap_or(&first);
        if let Some(compacted) = int_field(result, "compact_revision").filter(|r| *r > 0) {
            return Err(EtcdError::Compacted {
                requested: start_revision,
                compacted,
            });
        }
        if result.get("canceled").and_then(Value::as_bool) == Some(true) {
            let reason = result
                .get("cancel_reason")
                .and_then(Value::as_str)
                .unwrap_or("watch canceled");
            return Err(EtcdError::Server(reason.to_string()));
        }
        Ok(watch)
    }

    /// Sends one request with the ordinary deadline and parses its JSON answer.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let response = self.post(path, body, Some(self.options.timeout)).await?;
        let bytes = tokio::time::timeout(self.options.timeout, response.bytes())
            .await
            .map_err(|_| EtcdError::Unknown("timed out reading the answer".into()))?
            .map_err(|e| EtcdError::Unknown(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Protocol(e.to_string()))
    }

    /// Posts to the current endpoint, moving on to the next ones while nothing could be
    /// sent; authenticates first when a user is configured.
    async fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, EtcdError> {
        let n = self.endpoints.len();
        let mut last = String::new();
        for _ in 0..n {
            let i = self.current.load(Ordering::Relaxed) % n;
            let endpoint = &self.endpoints[i];
            match self.post_to(endpoint, path, body, timeout).await {
                Err(EtcdError::Unreachable(e)) => {
                    last = format!("{endpoint}: {e}");
                    // Another task may have moved on already; move only from here.
                    let _ = self.current.compare_exchange(
                        i,
                        i + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                other => return other,
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    async fn post_to(
        &self,
        endpoint: &str,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, EtcdError> {
        let token = self.token(endpoint).await?;
        let mut request = self.http.post(format!("{endpoint}{path}")).json_body(body);
        if let Some(token) = &token {
            request = request.header(reqwest::header::AUTHORIZATION, token.as_str());
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(classify)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or(text);
        if message.contains("token") && token.is_some() {
            // An expired auth token: authenticate again next time.
            *self.token.lock().await = None;
        }
        Err(EtcdError::Server(format!("{status}: {message}")))
    }

    /// Sends to a given endpoint (no failover), for per-member status.
    async fn send(
        &self,
        url: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<Value, EtcdError> {
        let mut request = self.http.post(url).json_body(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(classify)?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| EtcdError::Unknown(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Protocol(e.to_string()))
    }

    /// The auth token for requests, fetched once per client (and again after etcd
    /// rejects it).
    async fn token(&self, endpoint: &str) -> Result<Option<String>, EtcdError> {
        let Some((user, password)) = &self.options.user else {
            return Ok(None);
        };
        let mut token = self.token.lock().await;
        if let Some(token) = token.as_ref() {
            return Ok(Some(token.clone()));
        }
        let body = json!({ "name": user, "password": password });
        let response = self
            .http
            .post(format!("{endpoint}/v3/auth/authenticate"))
            .json_body(&body)
            .timeout(self.options.timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| EtcdError::Unknown(e.to_string()))?;
        let reply: Value =
            serde_json::from_slice(&bytes).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        let Some(fresh) = reply.get("token").and_then(Value::as_str) else {
            let message = reply
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no token in the answer");
            return Err(EtcdError::Server(format!(
                "authentication as {user:?} failed ({status}): {message}"
            )));
        };
        *token = Some(fresh.to_string());
        Ok(Some(fresh.to_string()))
    }
}

/// An open watch stream.
pub struct Watch {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next batch of events. Errors end the watch.
    pub async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        let message = self.message().await?;
        if let Some(error) = message.get("error") {
            return Err(EtcdError::Server(error.to_string()));
        }
        let result = message.get("result").unwrap_or(&message);
        if let Some(compacted) = int_field(result, "compact_revision").filter(|r| *r > 0) {
            return Err(EtcdError::Compacted {
                requested: 0,
                compacted,
            });
        }
        if result.get("canceled").and_then(Value::as_bool) == Some(true) {
            return Err(EtcdError::Server("watch canceled by etcd".into()));
        }
        let events = match result.get("events") {
            Some(Value::Array(events)) => events
                .iter()
                .map(|e| {
                    Ok(Event {
                        deleted: e.get("type").and_then(Value::as_str) == Some("DELETE"),
                        kv: parse_kv(e.get("kv").unwrap_or(&Value::Null))?,
                    })
                })
                .collect::<Result<_, EtcdError>>()?,
            _ => Vec::new(),
        };
        Ok(WatchBatch {
            events,
            revision: header_revision(result),
        })
    }

    /// One JSON message of the stream (the gateway writes one per line).
    async fn message(&mut self) -> Result<Value, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map_err(|e| EtcdError::Protocol(format!("watch message: {e}")));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => {
                    // A last message without a newline.
                    if !self.buffer.iter().all(u8::is_ascii_whitespace) {
                        let line = std::mem::take(&mut self.buffer);
                        return serde_json::from_slice(&line)
                            .map_err(|e| EtcdError::Protocol(format!("watch message: {e}")));
                    }
                    return Err(EtcdError::Unknown("the watch stream ended".into()));
                }
                Err(e) => return Err(EtcdError::Unknown(format!("watch stream: {e}"))),
            }
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end for a
/// prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: "all keys from here on" is `\0`.
    vec![0]
}

fn op_json(op: &Op) -> Value {
    match op {
        Op::Put { key, value, lease } => {
            let mut put = json!({ "key": B64.encode(key), "value": B64.encode(value) });
            if *lease != 0 {
                put["lease"] = json!(lease.to_string());
            }
            json!({ "request_put": put })
        }
        Op::Delete { key, range_end } => {
            let mut delete = json!({ "key": B64.encode(key) });
            if let Some(end) = range_end {
                delete["range_end"] = json!(B64.encode(end));
            }
            json!({ "request_delete_range": delete })
        }
    }
}

fn classify(e: reqwest::Error) -> EtcdError {
    if e.is_connect() || e.is_builder() {
        EtcdError::Unreachable(e.to_string())
    } else {
        EtcdError::Unknown(e.to_string())
    }
}

/// A 64-bit integer field, which the gateway writes as a string.
fn int_field(value: &Value, name: &str) -> Option<i64> {
    match value.get(name)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn header_revision(reply: &Value) -> i64 {
    reply
        .get("header")
        .and_then(|h| int_field(h, "revision"))
        .unwrap_or(0)
}

fn bytes_field(value: &Value, name: &str) -> Result<Vec<u8>, EtcdError> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => B64
            .decode(s)
            .map_err(|e| EtcdError::Protocol(format!("{name}: {e}"))),
        Some(_) => Err(EtcdError::Protocol(format!("{name} is not a string"))),
    }
}

fn parse_kv(kv: &Value) -> Result<Kv, EtcdError> {
    Ok(Kv {
        key: bytes_field(kv, "key")?,
        value: bytes_field(kv, "value")?,
        create_revision: int_field(kv, "create_revision").unwrap_or(0),
        mod_revision: int_field(kv, "mod_revision").unwrap_or(0),
        lease: int_field(kv, "lease").unwrap_or(0),
    })
}

/// JSON bodies without reqwest's `json` feature.
trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }
}

/// TLS for https endpoints: the given CAs (else the platform's roots) and, when given,
/// a client certificate.
fn tls_config(options: &EtcdOptions) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?;
    let builder = match &options.ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("ca file: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca file: {e}"))?;
            }
            if roots.is_empty() {
                return Err("ca file: no certificate in it".into());
            }
            builder.with_root_certificates(roots)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                .map_err(|e| format!("tls root certificates: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let mut config = match &options.client_identity {
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("cert file: {e}"))?;
            if certs.is_empty() {
                return Err("cert file: no certificate in it".into());
            }
            let key =
                PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key file: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/geolb/"), b"/geolb0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn kvs_parse_with_defaults() {
        let kv =
            json!({"key": "L2E=", "value": "czE=", "create_revision": "2", "mod_revision": "3"});
        let kv = parse_kv(&kv).unwrap();
        assert_eq!(kv.key, b"/a");
        assert_eq!(kv.value, b"s1");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.lease), (2, 3, 0));
        // A deleted key's event carries no value.
        let kv = parse_kv(&json!({"key": "L2E=", "mod_revision": "4"})).unwrap();
        assert!(kv.value.is_empty());
        assert!(parse_kv(&json!({"key": 5})).is_err());
    }
}
