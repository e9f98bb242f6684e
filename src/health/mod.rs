//! Provisional: replaced by the real health module.
use std::net::IpAddr;
use std::time::Duration;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Http,
    Https,
    Tcp,
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(Box<[(u16, u16)]>);
impl StatusSet {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(a, b)| *a <= code && code <= *b)
    }
    pub fn default_ok() -> Self {
        StatusSet(Box::new([(200, 399)]))
    }
    pub fn from_codes(codes: &[u16]) -> Self {
        StatusSet(codes.iter().map(|c| (*c, *c)).collect())
    }
}
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    pub port: u16,
    pub path: String,
    pub host: Option<String>,
    pub expect: StatusSet,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub address: Option<IpAddr>,
    pub insecure: bool,
}
