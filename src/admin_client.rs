//! A minimal HTTP/1.1 client for the admin API, used by `geolb tenants`: one request
//! per connection, JSON in and out. The admin API is local or on a trusted network, so
//! plain HTTP over a blocking socket is all it needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// A response: the status code and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The API's `{"error": "..."}` message, or the status line when there is none.
    pub fn error_message(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            None => format!("admin API answered HTTP {}", self.status),
        }
    }
}

/// Sends one request and reads the whole response.
pub fn request(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Reply, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to the admin API at {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the answer from {addr}: {e}"))?;
    parse_response(&raw)
}

/// Like [`request`], for an answer that is not JSON: its status and body bytes.
pub fn request_bytes(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to the admin API at {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the answer from {addr}: {e}"))?;
    split_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Reply, String> {
    let (status, payload) = split_response(raw)?;
    let body = if payload.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&payload).map_err(|e| {
            format!("the admin API answered HTTP {status} with a body that is not JSON: {e}")
        })?
    };
    Ok(Reply { status, body })
}

/// The status and the (de-chunked) body of a raw HTTP/1.1 response.
fn split_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response from the admin API (no header end)")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("malformed HTTP status line from the admin API")?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let payload = &raw[split + 4..];
    let payload = if chunked {
        dechunk(payload)?
    } else {
        payload.to_vec()
    };
    Ok((status, payload))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("malformed chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "malformed chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunked body".to_string());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\n{\"error\":\"no such\"}";
        let reply = parse_response(plain).unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error_message(), "no such");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        let reply = parse_response(chunked).unwrap();
        assert_eq!(reply.body["a"], 1);
        assert!(parse_response(b"garbage").is_err());
        let empty = parse_response(b"HTTP/1.1 500 x\r\n\r\n").unwrap();
        assert_eq!(empty.error_message(), "admin API answered HTTP 500");
    }
}
