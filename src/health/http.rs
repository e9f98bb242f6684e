//! HTTP and HTTPS probes.
//!
//! This module owns building one HTTP client per probed address and judging
//! one `GET` by its status line, plus the TLS settings those clients share:
//! certificates are verified against the platform's roots (and any extra
//! roots given in the options) unless the check is marked insecure. It does
//! not time probes out itself, count results or follow redirects, and it
//! never touches the DNS query path.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::header::{HOST, HeaderName, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{CheckKind, CheckSpec, ProbeError, ProbeOptions, ProbeTarget, StatusSet, io_reason};

/// The TLS client settings of one spawn, built once and shared by every
/// client; each is an error message when it could not be built, which the
/// probes that need it then report on every round.
pub(super) struct TlsConfigs {
    /// For plain HTTP clients, which still need some TLS setup to be built:
    /// it trusts no certificate and is never used, as redirects are not followed.
    plain: Result<ClientConfig, String>,
    /// Verifies certificates against the platform's roots and the extra roots.
    verified: Result<ClientConfig, String>,
    /// Accepts any certificate, for checks marked insecure.
    insecure: Result<ClientConfig, String>,
}

impl TlsConfigs {
    pub(super) fn new(options: &ProbeOptions, targets: &[ProbeTarget]) -> Self {
        // The ring provider is chosen explicitly rather than installed as the
        // process default, so this module does not depend on, nor change,
        // what the rest of the process uses.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = |insecure: bool| {
            targets
                .iter()
                .any(|t| t.check.kind == CheckKind::Https && t.check.insecure == insecure)
        };
        // Loading the platform's roots reads and parses the system's whole
        // certificate bundle, so it is skipped when no check needs it.
        let verified = if https(false) {
            verified_config(&provider, options)
        } else {
            Err("no https check verifies certificates".to_owned())
        };
        TlsConfigs {
            plain: plain_config(&provider),
            verified,
            insecure: insecure_config(&provider),
        }
    }

    fn for_check(&self, spec: &CheckSpec) -> &Result<ClientConfig, String> {
        match spec.kind {
            CheckKind::Https if spec.insecure => &self.insecure,
            CheckKind::Https => &self.verified,
            CheckKind::Http | CheckKind::Tcp => &self.plain,
        }
    }
}

fn config_builder(
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
    ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))
}

/// Finishes a client configuration: only HTTP/1.1 is offered, as that is all
/// the client speaks.
fn finish(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn plain_config(provider: &Arc<CryptoProvider>) -> Result<ClientConfig, String> {
    Ok(finish(
        config_builder(provider)?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    ))
}

fn verified_config(
    provider: &Arc<CryptoProvider>,
    options: &ProbeOptions,
) -> Result<ClientConfig, String> {
    let mut extra = Vec::new();
    for pem in &options.extra_root_certs_pem {
        let before = extra.len();
        for cert in CertificateDer::pem_slice_iter(pem) {
            extra.push(cert.map_err(|e| format!("extra root certificate: {e}"))?);
        }
        if extra.len() == before {
            return Err("extra root certificate: no certificate in pem".to_owned());
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, Arc::clone(provider))
            .map_err(|e| format!("tls root certificates: {e}"))?;
    Ok(finish(
        config_builder(provider)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    ))
}

fn insecure_config(provider: &Arc<CryptoProvider>) -> Result<ClientConfig, String> {
    let verifier = AcceptAnyCertificate(provider.signature_verification_algorithms);
    Ok(finish(
        config_builder(provider)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    ))
}

/// Accepts any certificate chain for any name, but still checks that the
/// handshake is signed by the certificate's key: insecure checks skip
/// certificate validation, not TLS itself.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A ready HTTP or HTTPS probe of one address.
pub(super) struct HttpProbe {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Set only when the check's host is an IP literal; otherwise the URL
    /// carries the host and the client sends it.
    host_header: Option<HeaderValue>,
    /// The check's `weight_header`, read from every response.
    weight_header: Option<HeaderName>,
}

/// What one response said about the backend's weight (`weight_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported {
    /// The check reads no weight header.
    NotAsked,
    /// The header is absent: the site's configured weight applies.
    Absent,
    /// The header is there but not a number in `0..=MAX_WEIGHT`: the configured
    /// weight applies, and the probe counts it.
    Invalid,
    Weight(u32),
}

/// The largest weight a backend may report.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Reads a reported weight: one decimal number `0..=MAX_WEIGHT`, optional spaces
/// around it (RFC 9110 section 5.5: optional whitespace is not part of the value);
/// anything else (a sign, a fraction, a list, a repeated header) is invalid.
pub(crate) fn parse_weight<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Reported {
    let Some(value) = values.next() else {
        return Reported::Absent;
    };
    if values.next().is_some() {
        return Reported::Invalid;
    }
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
        return Reported::Invalid;
    }
    let weight = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    if weight > MAX_WEIGHT {
        Reported::Invalid
    } else {
        Reported::Weight(weight)
    }
}

impl HttpProbe {
    /// Builds the client and request of one address; done once per target,
    /// not per probe.
    pub(super) fn new(
        spec: &CheckSpec,
        addr: SocketAddr,
        tls: &TlsConfigs,
        source: Option<IpAddr>,
    ) -> Result<Self, String> {
        let (scheme, default_port) = match spec.kind {
            CheckKind::Https => ("https", 443),
            CheckKind::Http | CheckKind::Tcp => ("http", 80),
        };
        let tls = tls.for_check(spec).clone()?;
        let builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // A probe must reach the backend itself, and each probe must open
            // a fresh connection so that a dead backend is noticed.
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .user_agent(concat!(
                "geolb/",
                env!("CARGO_PKG_VERSION"),
                " health check"
            ))
            // Whatever the host is spelled like, the one address this
            // client probes is the only one it can reach.
            .dns_resolver(PinnedResolver(addr))
            // The node's probe source (`probe_source`), when it is of this family.
            .local_address(source.filter(|s| s.is_ipv4() == addr.is_ipv4()));

        let mut host_header = None;
        let authority = match spec.host.as_deref() {
            Some(host) => match host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                // A name in the URL gives the Host header and the TLS server
                // name; the pinned resolver sends the connection to the
                // probed address.
                Err(_) => format!("{host}:{}", spec.port),
                // An IP literal in the URL would bypass the resolver, so the
                // URL names the probed address and only the Host header
                // names the host.
                Ok(ip) => {
                    // Like the client would, name the port only when it is
                    // not the scheme's default.
                    let mut value = match ip {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => format!("[{v6}]"),
                    };
                    if spec.port != default_port {
                        value = format!("{value}:{}", spec.port);
                    }
                    host_header = Some(
                        HeaderValue::from_str(&value).map_err(|e| format!("host header: {e}"))?,
                    );
                    addr.to_string()
                }
            },
            None => addr.to_string(),
        };
        let path = if spec.path.starts_with('/') {
            spec.path.clone()
        } else {
            format!("/{}", spec.path)
        };
        let url = reqwest::Url::parse(&format!("{scheme}://{authority}{path}"))
            .map_err(|e| format!("url: {e}"))?;
        let client = builder.build().map_err(|e| format!("http client: {e}"))?;
        let weight_header = match spec.weight_header.as_deref() {
            Some(name) => Some(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("weight header: {e}"))?,
            ),
            None => None,
        };
        Ok(HttpProbe {
            client,
            url,
            host_header,
            weight_header,
        })
    }

    /// Sends one `GET` and judges the response by its status alone; the body
    /// is never read, and dropping the response closes the connection. With a
    /// `weight_header`, also reads the weight the backend reports.
    pub(super) async fn probe(&self, expect: &StatusSet) -> Result<(u16, Reported), ProbeError> {
        let mut request = self.client.get(self.url.clone());
        if let Some(host) = &self.host_header {
            request = request.header(HOST, host.clone());
        }
        let response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        if !expect.contains(status) {
            return Err(ProbeError::Status(status));
        }
        let reported = match &self.weight_header {
            None => Reported::NotAsked,
            Some(name) => parse_weight(
                response
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| v.as_bytes()),
            ),
        };
        Ok((status, reported))
    }
}

/// Resolves every name to one address.
struct PinnedResolver(SocketAddr);

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(self.0));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

/// Turns a client error into a short reason: the TLS error or the I/O error
/// at the bottom of the chain when there is one, rather than the client's
/// generic wrapping.
fn classify(err: reqwest::Error) -> ProbeError {
    let connect = err.is_connect();
    let mut innermost = err.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return ProbeError::Tls(tls.to_string());
        }
        if let Some(mut io) = e.downcast_ref::<io::Error>() {
            // Connectors wrap I/O errors in further I/O errors, and TLS
            // errors travel inside them too; `source` skips both, so the
            // wrapped error is looked at directly.
            while let Some(inner) = io.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return ProbeError::Tls(tls.to_string());
                }
                match inner.downcast_ref::<io::Error>() {
                    Some(inner) => io = inner,
                    None => break,
                }
            }
            let reason = io_reason(io);
            return if connect {
                ProbeError::Connect(reason)
            } else {
                ProbeError::Request(reason)
            };
        }
        innermost = e.to_string();
        source = e.source();
    }
    if connect {
        ProbeError::Connect(innermost)
    } else {
        ProbeError::Request(innermost)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::time::Instant;

    use super::super::tests::{
        Backend, DEADLINE, HANG, LOCALHOST, next_event, spec, start, start_with, target, wait_board,
    };
    use super::super::{Health, HealthEvent, TargetKey};
    use super::*;

    fn http_target(backend: &Backend) -> ProbeTarget {
        target(spec(CheckKind::Http, backend.addr.port()), vec![LOCALHOST])
    }

    #[tokio::test]
    async fn http_200_is_up_and_503_goes_down() {
        let backend = Backend::http(200).await;
        let mut started = start(vec![http_target(&backend)]);
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Unknown, Health::Up));
        assert_eq!(event.reason, format!("{}: status 200", backend.addr));

        backend.set(503);
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Up, Health::Down));
        assert_eq!(
            event.reason,
            format!("{}: status 503 not in expected set", backend.addr)
        );

        let (line, host) = &backend.requests()[0];
        assert_eq!(line, "GET /healthz HTTP/1.1");
        assert_eq!(host, &backend.addr.to_string());
    }

    #[tokio::test]
    async fn expected_status_list_is_honoured() {
        let backend = Backend::http(503).await;
        let mut t = http_target(&backend);
        t.check.expect = StatusSet::from_codes(&[204, 503]);
        t.check.fall = 1;
        let mut started = start(vec![t]);
        assert_eq!(next_event(&mut started.events).await.new, Health::Up);

        backend.set(200);
        let event = next_event(&mut started.events).await;
        assert_eq!(event.new, Health::Down);
        assert_eq!(
            event.reason,
            format!("{}: status 200 not in expected set", backend.addr)
        );
    }

    #[tokio::test]
    async fn redirects_are_statuses_not_followed() {
        let backend = Backend::http(302).await;
        let up = http_target(&backend);
        let mut strict = http_target(&backend);
        strict.key = TargetKey { zone: 0, site: 1 };
        strict.check.expect = StatusSet::from_codes(&[200]);
        let mut started = start(vec![up.clone(), strict.clone()]);
        let firsts = first_events(&mut started.events, 2).await;
        assert_eq!(firsts[&up.key].new, Health::Up);
        assert_eq!(firsts[&strict.key].new, Health::Down);
        assert_eq!(
            firsts[&strict.key].reason,
            format!("{}: status 302 not in expected set", backend.addr)
        );
        assert!(
            backend
                .requests()
                .iter()
                .all(|(line, _)| line == "GET /healthz HTTP/1.1")
        );
    }

    #[tokio::test]
    async fn host_header_is_sent() {
        let backend = Backend::http(200).await;
        let port = backend.addr.port();
        let mut named = http_target(&backend);
        named.check.host = Some("example.test".to_owned());
        named.check.path = "status".to_owned();
        let mut shouting = http_target(&backend);
        shouting.key = TargetKey { zone: 0, site: 2 };
        shouting.check.host = Some("EXAMPLE.Test".to_owned());
        let mut literal = http_target(&backend);
        literal.key = TargetKey { zone: 0, site: 1 };
        literal.check.host = Some("127.0.0.9".to_owned());

        // The named host is only ever resolved to the probed address.
        let started = start(vec![named.clone()]);
        wait_board(&started.board, named.key, |s| s.last_ok == Some(true)).await;
        started.probes.shutdown().await;
        let (line, host) = &backend.requests()[0];
        assert_eq!(line, "GET /status HTTP/1.1");
        assert_eq!(host, &format!("example.test:{port}"));

        // However the host is spelled, only the probed address is reached.
        let before = backend.requests().len();
        let started = start(vec![shouting.clone()]);
        let status = wait_board(&started.board, shouting.key, |s| s.last_ok.is_some()).await;
        started.probes.shutdown().await;
        assert_eq!(status.last_reason, format!("127.0.0.1:{port}: status 200"));
        assert_eq!(backend.requests()[before].1, format!("example.test:{port}"));

        // An IP literal as host goes into the header only: the connection
        // still goes to the probed address.
        let before = backend.requests().len();
        let started = start(vec![literal.clone()]);
        let status = wait_board(&started.board, literal.key, |s| s.last_ok.is_some()).await;
        started.probes.shutdown().await;
        assert_eq!(status.last_reason, format!("127.0.0.1:{port}: status 200"));
        assert_eq!(backend.requests()[before].1, format!("127.0.0.9:{port}"));
    }

    #[tokio::test]
    async fn a_backend_that_never_answers_costs_one_timeout_per_probe() {
        let backend = Backend::http(HANG).await;
        let mut t = http_target(&backend);
        t.check.timeout = Duration::from_millis(200);
        let key = t.key;
        let started_at = Instant::now();
        let mut started = start(vec![t]);
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Unknown, Health::Down));
        assert_eq!(
            event.reason,
            format!("{}: timed out after 200ms", backend.addr)
        );

        // Rounds keep coming, each bounded by the timeout.
        let status = wait_board(&started.board, key, |s| s.failures >= 3).await;
        assert!(started_at.elapsed() >= Duration::from_millis(600));
        let latency = status.last_latency.expect("latency");
        assert!(latency >= Duration::from_millis(200), "{latency:?}");
        assert!(latency < Duration::from_secs(5), "{latency:?}");
        assert!(backend.requests().len() >= 3);

        // Stopping does not wait for a hanging request.
        tokio::time::timeout(DEADLINE, started.probes.shutdown())
            .await
            .expect("probes stop promptly");
    }

    /// A CA and a certificate it signed for `name`, served by the returned acceptor.
    fn test_pki(name: &str) -> (String, tokio_rustls::TlsAcceptor) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "geolb test ca");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca certificate");

        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// The first event of each of `count` targets.
    async fn first_events(
        events: &mut tokio::sync::mpsc::UnboundedReceiver<HealthEvent>,
        count: usize,
    ) -> HashMap<TargetKey, HealthEvent> {
        let mut firsts = HashMap::new();
        while firsts.len() < count {
            let event = next_event(events).await;
            firsts.entry(event.key).or_insert(event);
        }
        firsts
    }

    fn https_target(backend: &Backend, site: u32, host: &str, insecure: bool) -> ProbeTarget {
        let mut check = spec(CheckKind::Https, backend.addr.port());
        check.host = Some(host.to_owned());
        check.insecure = insecure;
        let mut t = target(check, vec![LOCALHOST]);
        t.key = TargetKey { zone: 0, site };
        t
    }

    #[tokio::test]
    async fn https_verifies_certificates() {
        let (ca_pem, acceptor) = test_pki("example.test");
        let backend = Backend::https(200, acceptor).await;
        let addr = backend.addr;

        // Trusting the test CA: the right name verifies, a wrong one does not.
        let good = https_target(&backend, 0, "example.test", false);
        let wrong_name = https_target(&backend, 1, "other.test", false);
        let mut with_ca = start_with(
            vec![good.clone(), wrong_name.clone()],
            ProbeOptions {
                extra_root_certs_pem: vec![ca_pem.into_bytes()],
                source: None,
                signals: None,
            },
        );
        let firsts = first_events(&mut with_ca.events, 2).await;
        assert_eq!(firsts[&good.key].new, Health::Up);
        assert_eq!(firsts[&good.key].reason, format!("{addr}: status 200"));
        assert_eq!(firsts[&wrong_name.key].new, Health::Down);
        let reason = &firsts[&wrong_name.key].reason;
        assert!(reason.starts_with(&format!("{addr}: tls: ")), "{reason}");
        assert!(reason.contains("not valid for name"), "{reason}");
        with_ca.probes.shutdown().await;

        // The request names the host in SNI and the Host header.
        assert!(
            backend
                .server_names()
                .iter()
                .any(|n| n.as_deref() == Some("example.test"))
        );
        assert!(
            backend
                .requests()
                .iter()
                .any(|(_, host)| host == &format!("example.test:{}", addr.port()))
        );

        // Without the test CA verification fails, unless the check is insecure.
        let untrusted = https_target(&backend, 2, "example.test", false);
        let insecure = https_target(&backend, 3, "example.test", true);
        let mut without_ca = start(vec![untrusted.clone(), insecure.clone()]);
        let firsts = first_events(&mut without_ca.events, 2).await;
        assert_eq!(firsts[&untrusted.key].new, Health::Down);
        let reason = &firsts[&untrusted.key].reason;
        // Depending on whether this host has any system roots, either the
        // certificate is refused or no verifier can be built at all.
        assert!(
            reason.starts_with(&format!("{addr}: tls: "))
                || reason.starts_with(&format!("{addr}: probe setup failed: tls")),
            "{reason}"
        );
        assert_eq!(firsts[&insecure.key].new, Health::Up);
    }

    #[tokio::test]
    async fn unusable_extra_roots_are_reported() {
        let (_, acceptor) = test_pki("example.test");
        let backend = Backend::https(200, acceptor).await;
        let t = https_target(&backend, 0, "example.test", false);
        let mut started = start_with(
            vec![t],
            ProbeOptions {
                extra_root_certs_pem: vec![b"not a certificate".to_vec()],
                source: None,
                signals: None,
            },
        );
        let event = next_event(&mut started.events).await;
        assert_eq!(event.new, Health::Down);
        assert_eq!(
            event.reason,
            format!(
                "{}: probe setup failed: extra root certificate: no certificate in pem",
                backend.addr
            )
        );
    }

    #[test]
    fn reported_weights_parse_strictly() {
        let one = |v: &'static str| parse_weight(std::iter::once(v.as_bytes()));
        assert_eq!(parse_weight(std::iter::empty()), Reported::Absent);
        assert_eq!(one("0"), Reported::Weight(0));
        assert_eq!(one(" 250 "), Reported::Weight(250));
        assert_eq!(one("1000000"), Reported::Weight(1_000_000));
        assert_eq!(one("0001000"), Reported::Weight(1000));
        for bad in [
            "", " ", "1000001", "99999999", "-1", "+5", "1.5", "1e3", "10, 20", "abc",
        ] {
            assert_eq!(one(bad), Reported::Invalid, "{bad:?}");
        }
        let two = [b"1".as_slice(), b"2".as_slice()];
        assert_eq!(parse_weight(two.into_iter()), Reported::Invalid);
    }

    #[tokio::test]
    async fn http_probe_reports_refused_connections() {
        let listener = tokio::net::TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let check = spec(CheckKind::Http, addr.port());
        let tls = TlsConfigs::new(&ProbeOptions::default(), &[]);
        let probe = HttpProbe::new(&check, addr, &tls, None).expect("probe");
        let err = probe
            .probe(&StatusSet::default_ok())
            .await
            .expect_err("nothing listens");
        assert_eq!(err.to_string(), "connect failed: connection refused");
    }
}
