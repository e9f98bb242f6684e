//! The dnstap protobuf messages geolb writes (`dnstap.proto`: `Dnstap` with one
//! `Message` of type AUTH_QUERY or AUTH_RESPONSE), encoded by hand: two messages of a
//! dozen scalar and bytes fields need only varints, fixed32 and length-delimited
//! fields, and no `protoc` or generated code.

use std::net::{IpAddr, SocketAddr};

/// `Dnstap.Type.MESSAGE`.
const DNSTAP_MESSAGE: u64 = 1;

/// `Message.Type`: the two an authoritative server logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    AuthQuery = 1,
    AuthResponse = 2,
}

/// `SocketProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp = 1,
    Tcp = 2,
}

/// A time as dnstap carries it: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Time {
    pub sec: u64,
    pub nsec: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from(std::time::SystemTime::now())
    }
}

impl From<std::time::SystemTime> for Time {
    fn from(time: std::time::SystemTime) -> Time {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            sec: since.as_secs(),
            nsec: since.subsec_nanos(),
        }
    }
}

/// One dnstap `Message`.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    pub kind: Kind,
    pub protocol: Protocol,
    /// The client.
    pub query_address: SocketAddr,
    /// The server's address, when the socket is bound to one.
    pub response_address: Option<SocketAddr>,
    pub query_time: Time,
    pub response_time: Option<Time>,
    pub query_message: Option<&'a [u8]>,
    pub response_message: Option<&'a [u8]>,
}

// Field numbers of `Dnstap`.
const F_IDENTITY: u32 = 1;
const F_VERSION: u32 = 2;
const F_MESSAGE: u32 = 14;
const F_TYPE: u32 = 15;
// Field numbers of `Message`.
const M_TYPE: u32 = 1;
const M_SOCKET_FAMILY: u32 = 2;
const M_SOCKET_PROTOCOL: u32 = 3;
const M_QUERY_ADDRESS: u32 = 4;
const M_RESPONSE_ADDRESS: u32 = 5;
const M_QUERY_PORT: u32 = 6;
const M_RESPONSE_PORT: u32 = 7;
const M_QUERY_TIME_SEC: u32 = 8;
const M_QUERY_TIME_NSEC: u32 = 9;
const M_QUERY_MESSAGE: u32 = 10;
const M_RESPONSE_TIME_SEC: u32 = 12;
const M_RESPONSE_TIME_NSEC: u32 = 13;
const M_RESPONSE_MESSAGE: u32 = 14;

const VARINT: u32 = 0;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Appends one `Dnstap` frame payload for `event` to `out`; `scratch` is reused for
/// the inner message.
pub fn encode(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    identity: &[u8],
    version: &[u8],
    event: &Event<'_>,
) {
    scratch.clear();
    encode_message(scratch, event);
    if !identity.is_empty() {
        bytes(out, F_IDENTITY, identity);
    }
    if !version.is_empty() {
        bytes(out, F_VERSION, version);
    }
    bytes(out, F_MESSAGE, scratch);
    uint(out, F_TYPE, DNSTAP_MESSAGE);
}

fn encode_message(out: &mut Vec<u8>, event: &Event<'_>) {
    uint(out, M_TYPE, event.kind as u64);
    let family = match event.query_address.ip() {
        IpAddr::V4(_) => 1,
        IpAddr::V6(_) => 2,
    };
    uint(out, M_SOCKET_FAMILY, family);
    uint(out, M_SOCKET_PROTOCOL, event.protocol as u64);
    address(out, M_QUERY_ADDRESS, event.query_address.ip());
    // Only an address of the client's family: a reader takes both as one family.
    let response = event
        .response_address
        .filter(|a| a.is_ipv4() == event.query_address.is_ipv4());
    if let Some(response) = response {
        address(out, M_RESPONSE_ADDRESS, response.ip());
    }
    uint(out, M_QUERY_PORT, u64::from(event.query_address.port()));
    if let Some(response) = response {
        uint(out, M_RESPONSE_PORT, u64::from(response.port()));
    }
    uint(out, M_QUERY_TIME_SEC, event.query_time.sec);
    fixed32(out, M_QUERY_TIME_NSEC, event.query_time.nsec);
    if let Some(query) = event.query_message {
        bytes(out, M_QUERY_MESSAGE, query);
    }
    if let Some(time) = event.response_time {
        uint(out, M_RESPONSE_TIME_SEC, time.sec);
        fixed32(out, M_RESPONSE_TIME_NSEC, time.nsec);
    }
    if let Some(response) = event.response_message {
        bytes(out, M_RESPONSE_MESSAGE, response);
    }
}

fn address(out: &mut Vec<u8>, field: u32, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => bytes(out, field, &v4.octets()),
        IpAddr::V6(v6) => bytes(out, field, &v6.octets()),
    }
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
    key(out, field, VARINT);
    varint(out, value);
}

fn fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    key(out, field, FIXED32);
    out.extend_from_slice(&value.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    key(out, field, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A field as decoded: number and value.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Value {
        Int(u64),
        Fixed32(u32),
        Bytes(Vec<u8>),
    }

    /// A minimal protobuf decoder: every field in order; `None` on malformed input.
    pub fn decode(mut data: &[u8]) -> Option<Vec<(u32, Value)>> {
        fn read_varint(data: &mut &[u8]) -> Option<u64> {
            let mut value = 0u64;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = data.split_first()?;
                *data = rest;
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return Some(value);
                }
            }
            None
        }
        let mut fields = Vec::new();
        while !data.is_empty() {
            let key = read_varint(&mut data)?;
            let field = u32::try_from(key >> 3).ok()?;
            let value = match key & 7 {
                0 => Value::Int(read_varint(&mut data)?),
                2 => {
                    let len = usize::try_from(read_varint(&mut data)?).ok()?;
                    let (value, rest) = data.split_at_checked(len)?;
                    data = rest;
                    Value::Bytes(value.to_vec())
                }
                5 => {
                    let (value, rest) = data.split_first_chunk::<4>()?;
                    data = rest;
                    Value::Fixed32(u32::from_le_bytes(*value))
                }
                _ => return None,
            };
            fields.push((field, value));
        }
        Some(fields)
    }

    #[test]
    fn varints_match_the_protobuf_examples() {
        for (value, expected) in [
            (0u64, &[0u8][..]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (150, &[0x96, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            varint(&mut out, value);
            assert_eq!(out, expected, "{value}");
        }
    }

    #[test]
    fn a_response_decodes_back_field_by_field() {
        let event = Event {
            kind: Kind::AuthResponse,
            protocol: Protocol::Tcp,
            query_address: "192.0.2.7:40000".parse().unwrap(),
            response_address: Some("198.51.100.1:53".parse().unwrap()),
            query_time: Time {
                sec: 1_700_000_000,
                nsec: 123_456_789,
            },
            response_time: Some(Time {
                sec: 1_700_000_001,
                nsec: 5,
            }),
            query_message: None,
            response_message: Some(&[1, 2, 3]),
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        encode(&mut out, &mut scratch, b"ns1", b"geolb 1", &event);
        let outer = decode(&out).unwrap();
        assert_eq!(outer[0], (1, Value::Bytes(b"ns1".to_vec())));
        assert_eq!(outer[1], (2, Value::Bytes(b"geolb 1".to_vec())));
        assert_eq!(outer[3], (15, Value::Int(1)));
        let Value::Bytes(inner) = &outer[2].1 else {
            panic!("message is not bytes")
        };
        assert_eq!(outer[2].0, 14);
        assert_eq!(
            decode(inner).unwrap(),
            vec![
                (1, Value::Int(2)),
                (2, Value::Int(1)),
                (3, Value::Int(2)),
                (4, Value::Bytes(vec![192, 0, 2, 7])),
                (5, Value::Bytes(vec![198, 51, 100, 1])),
                (6, Value::Int(40000)),
                (7, Value::Int(53)),
                (8, Value::Int(1_700_000_000)),
                (9, Value::Fixed32(123_456_789)),
                (12, Value::Int(1_700_000_001)),
                (13, Value::Fixed32(5)),
                (14, Value::Bytes(vec![1, 2, 3])),
            ]
        );
    }

    #[test]
    fn a_query_over_ipv6_without_identity() {
        let query = vec![0xab; 300];
        let event = Event {
            kind: Kind::AuthQuery,
            protocol: Protocol::Udp,
            query_address: "[2001:db8::1]:5353".parse().unwrap(),
            // Another family than the client's: left out.
            response_address: Some("127.0.0.1:53".parse().unwrap()),
            query_time: Time { sec: 1, nsec: 2 },
            response_time: None,
            query_message: Some(&query),
            response_message: None,
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        encode(&mut out, &mut scratch, b"", b"", &event);
        let outer = decode(&out).unwrap();
        assert_eq!(outer.len(), 2);
        let Value::Bytes(inner) = &outer[0].1 else {
            panic!("message is not bytes")
        };
        let ip: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            decode(inner).unwrap(),
            vec![
                (1, Value::Int(1)),
                (2, Value::Int(2)),
                (3, Value::Int(1)),
                (4, Value::Bytes(ip.octets().to_vec())),
                (6, Value::Int(5353)),
                (8, Value::Int(1)),
                (9, Value::Fixed32(2)),
                (10, Value::Bytes(query)),
            ]
        );
    }
}
