//! The floor for the peer benchmark: a UDP "server" that only sets the QR bit and
//! sends each datagram back. Whatever a real server costs per query above this is
//! its own work; this much is the kernel's.
//!
//! Run: `cargo run --release --example udp_echo -- 127.0.0.1:5315`.

use std::net::UdpSocket;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5315".to_string());
    let socket = match UdpSocket::bind(&addr) {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("cannot bind {addr}: {err}");
            std::process::exit(1);
        }
    };
    println!("listening udp {addr}");
    let mut buf = [0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if len < 12 {
            continue;
        }
        buf[2] |= 0x80;
        let _ = socket.send_to(&buf[..len], peer);
    }
}
