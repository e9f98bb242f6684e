//! Batches of datagrams over one UDP socket with `recvmmsg(2)` and `sendmmsg(2)`
//! (Linux): one system call receives up to `BATCH` queries, and one sends their replies.
//!
//! This is the crate's only `unsafe` code. It owns every buffer the kernel reads or
//! writes (datagram slots, address storage, `iovec`s and `mmsghdr`s, all allocated once
//! per socket thread) and re-points the headers at them before each call, so no pointer
//! outlives or escapes a call. The rest of the server sees a safe API: `recv`, then
//! `exchange` per datagram (query bytes and peer in, reply written over its slot), then
//! `send`. `omit_path_mtu` is here too: one `setsockopt` that socket2 does not wrap,
//! and `monotonic_ns`, the clock the UDP loop reads twice per batch for the metrics.

// A packet reaches everything here: no unwrap, no expect.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call: enough to amortise the call under load (a loaded server
/// finds a few datagrams queued per call, rarely more than a dozen), small enough that
/// the slots (`BATCH` of `SLOT` bytes) stay in cache.
pub const BATCH: usize = 16;

/// Bytes per datagram slot. Queries are far smaller (a question and an OPT), and our
/// UDP replies are at most `dns::MAX_UDP_PAYLOAD` plus an echoed question; a datagram
/// larger than this is cut by the kernel (`MSG_TRUNC`) and dropped, as no client sends
/// a real query that size.
pub const SLOT: usize = 4096;

/// Distance between slots: a slot and a cache line. Slots a multiple of 4 KiB apart
/// would all fall in the same few sets of the L1 cache and evict one another while the
/// kernel copies a batch in or out; one line of offset per slot spreads them.
const STRIDE: usize = SLOT + 64;

pub struct Batch {
    /// The datagram slots. A reply is written over its query, in the same slot, as the
    /// kernel reads it from there: one buffer per datagram, half the memory to keep in
    /// cache, and the lines the kernel just wrote are the ones it reads back.
    rx: Box<[u8]>,
    /// The query being answered, copied out of its slot before the reply overwrites it.
    query: Box<[u8]>,
    /// Each received datagram's sender; its reply is sent back to the same storage.
    rx_names: Box<[libc::sockaddr_storage]>,
    /// For each queued reply, the received datagram it answers.
    tx_from: [usize; BATCH],
    rx_iov: Box<[libc::iovec]>,
    tx_iov: Box<[libc::iovec]>,
    rx_hdrs: Box<[libc::mmsghdr]>,
    tx_hdrs: Box<[libc::mmsghdr]>,
    received: usize,
    queued: usize,
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: `sockaddr_storage` is plain old data; all-zero is a valid value (family
    // AF_UNSPEC).
    unsafe { mem::zeroed() }
}

fn zeroed_hdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is plain old data (integers and raw pointers); all-zero is a
    // valid value (null pointers, zero lengths), and every pointer is set before use.
    unsafe { mem::zeroed() }
}

fn empty_iov() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            rx: vec![0; BATCH * STRIDE].into_boxed_slice(),
            query: vec![0; SLOT].into_boxed_slice(),
            rx_names: (0..BATCH).map(|_| zeroed_storage()).collect(),
            tx_from: [0; BATCH],
            rx_iov: (0..BATCH).map(|_| empty_iov()).collect(),
            tx_iov: (0..BATCH).map(|_| empty_iov()).collect(),
            rx_hdrs: (0..BATCH).map(|_| zeroed_hdr()).collect(),
            tx_hdrs: (0..BATCH).map(|_| zeroed_hdr()).collect(),
            received: 0,
            queued: 0,
        }
    }
}

impl Batch {
    /// Waits for at least one datagram (or the socket's read timeout) and takes every
    /// one already queued, up to `BATCH`. Returns how many were received.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received = 0;
        self.queued = 0;
        for i in 0..BATCH {
            self.rx_iov[i] = libc::iovec {
                iov_base: self.rx[i * STRIDE..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let hdr = &mut self.rx_hdrs[i];
            hdr.msg_hdr.msg_name = (&raw mut self.rx_names[i]).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &raw mut self.rx_iov[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: `rx_hdrs` holds BATCH initialised headers, each pointing at its own
        // name storage (with its true size), its own iovec, and that iovec at its own
        // SLOT-byte region of `rx`; all are owned by `self`, borrowed mutably for the
        // whole call, and not moved during it. The kernel writes only within those
        // bounds. A null timeout blocks per the socket's SO_RCVTIMEO.
        // The raw system call (every argument a `long`, as `syscall(2)` takes them), not
        // libc's wrapper: the wrapper makes it a thread cancellation point, which costs
        // two calls per batch and is never used here.
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvmmsg,
                libc::c_long::from(socket.as_raw_fd()),
                self.rx_hdrs.as_mut_ptr(),
                BATCH as libc::c_long,
                libc::c_long::from(libc::MSG_WAITFORONE),
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = (n as usize).min(BATCH);
        Ok(self.received)
    }

    /// Hands datagram `i` (its bytes and sender) and the next reply slot to `answer`,
    /// and queues the reply if `answer` returns its length. Datagrams that were cut or
    /// come from an address we cannot read are skipped.
    pub fn exchange(
        &mut self,
        i: usize,
        answer: impl FnOnce(&[u8], SocketAddr, &mut [u8]) -> Option<usize>,
    ) {
        if i >= self.received || self.queued >= BATCH {
            return;
        }
        let hdr = &self.rx_hdrs[i];
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return;
        }
        let Some(peer) = socket_addr(&self.rx_names[i], hdr.msg_hdr.msg_namelen) else {
            return;
        };
        let len = (hdr.msg_len as usize).min(SLOT);
        let namelen = hdr.msg_hdr.msg_namelen;
        let slot = &mut self.rx[i * STRIDE..i * STRIDE + SLOT];
        let query = &mut self.query[..len];
        query.copy_from_slice(&slot[..len]);
        let Some(reply_len) = answer(query, peer, slot) else {
            return;
        };
        let j = self.queued;
        self.tx_from[j] = i;
        self.tx_iov[j].iov_len = reply_len.min(SLOT);
        self.tx_hdrs[j].msg_hdr.msg_namelen = namelen;
        self.queued += 1;
    }

    /// Sends every queued reply. A reply the kernel refuses (an unreachable peer, a full
    /// buffer) is skipped; it concerns one client and must not stop the others.
    pub fn send(&mut self, socket: &UdpSocket) {
        for j in 0..self.queued {
            let from = self.tx_from[j].min(BATCH - 1);
            self.tx_iov[j].iov_base = self.rx[from * STRIDE..].as_mut_ptr().cast();
            let hdr = &mut self.tx_hdrs[j];
            hdr.msg_hdr.msg_name = (&raw mut self.rx_names[from]).cast();
            hdr.msg_hdr.msg_iov = &raw mut self.tx_iov[j];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
        }
        let mut sent = 0;
        while sent < self.queued {
            let rest = &mut self.tx_hdrs[sent..self.queued];
            // SAFETY: `rest` holds initialised headers, each pointing at the name storage
            // of the datagram it answers (`msg_namelen` as received), its own iovec, and
            // that iovec at at most SLOT bytes of that datagram's slot in `rx`; all owned
            // by `self` and not moved during the call. The kernel only reads them (and
            // writes `msg_len`). MSG_DONTWAIT: a full send buffer drops a reply rather
            // than stall the thread and every query behind it.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_sendmmsg,
                    libc::c_long::from(socket.as_raw_fd()),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_long,
                    libc::c_long::from(libc::MSG_DONTWAIT),
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::debug!(%error, "udp send error");
                // sendmmsg fails only when its first message fails: skip that one.
                sent += 1;
            } else {
                sent += (n as usize).max(1);
            }
        }
        self.queued = 0;
    }
}

/// Sends replies without consulting or recording path-MTU state (`IP_PMTUDISC_OMIT`,
/// `IPV6_PMTUDISC_OMIT`): a reply larger than a learned path MTU is fragmented rather
/// than dropped, so forged ICMP "fragmentation needed" messages cannot lower the size
/// of our answers or make them fragment on demand, and the kernel skips a per-send
/// MTU lookup. DNS servers commonly do this (gdnsd, BIND, Knot); our UDP replies are
/// bounded by the client's EDNS payload size, not by the path. Kernels older than 3.15
/// lack OMIT; they get `PMTUDISC_DONT`, which also leaves DF off.
pub fn omit_path_mtu(socket: &UdpSocket, v6: bool) -> io::Result<()> {
    let (level, name, omit, dont) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_OMIT,
            libc::IPV6_PMTUDISC_DONT,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_OMIT,
            libc::IP_PMTUDISC_DONT,
        )
    };
    set_int_option(socket, level, name, omit).or_else(|_| set_int_option(socket, level, name, dont))
}

fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live `c_int` for the whole call and its true size is passed;
    // the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The sender of a datagram, from the address the kernel wrote.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a `sockaddr_in` (family AF_INET, length checked);
            // `sockaddr_storage` is large and aligned enough for any socket address.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6` (family AF_INET6, length checked).
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, through libc's `clock_gettime` (the vDSO): cheaper
/// than `Instant::elapsed`'s checked arithmetic, twice per batch. (rustix's own vDSO
/// reader would do without `unsafe`, but valgrind, which the instruction-count
/// benchmark runs the server under, cannot run it.)
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration; the clock id
    // is a constant the kernel always supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}
