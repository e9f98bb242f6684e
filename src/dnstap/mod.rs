//! dnstap: a log of queries and responses (AUTH_QUERY and AUTH_RESPONSE messages) in
//! Frame Streams over a unix socket that an outside reader (fstrm_capture, a dnstap
//! collector) listens on.
//!
//! The query path only copies: each UDP thread owns a [`Sink`], a bounded queue of
//! recycled entries (query bytes, response bytes, client, times) to one writer
//! thread; TCP connections share a [`TcpLog`], a bounded queue of fresh entries.
//! Every Nth query is logged (`dnstap_sample`), counted per UDP thread or per TCP
//! connection. The writer drains every queue, encodes the frames (`proto`), and writes
//! them (`fstrm`), reconnecting with backoff when the reader is missing or leaves.
//! The writer drains every `DRAIN_EVERY` (10 ms), or sooner when a UDP thread has
//! queued a quarter of its queue since it last woke it, so a busy server pays no
//! context switch per batch for the log.
//! When a queue is full, or the reader is missing or slower than the queries, log
//! messages are dropped and counted; a query never waits for the log.

pub mod fstrm;
pub mod proto;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

pub use proto::{Kind, Protocol, Time};

/// Entries each UDP thread may have in flight, and the TCP queue's length.
pub const QUEUE: usize = 1024;
/// Bytes a recycled entry's buffers keep between uses; a larger message is copied
/// into a buffer that shrinks back afterwards.
const KEEP_CAPACITY: usize = 4096;
/// Encoded bytes the writer holds for a slow reader before it drops new messages.
const MAX_PENDING: usize = 4 << 20;
/// How long one write waits for a slow reader before the writer drains the queues
/// again.
const WRITE_WAIT: Duration = Duration::from_millis(20);
/// Deadline of each step of the handshake and of the final STOP/FINISH.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the writer drains the queues: a logged message reaches the reader within
/// about this long. Waking the writer per batch would cost a context switch per
/// batch; this costs 100 wakeups a second.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// A UDP thread wakes the writer early after this many entries, a quarter of its
/// queue, so that a burst does not fill the queue before the next drain.
const WAKE_AFTER: u32 = QUEUE as u32 / 4;

/// `dnstap` and `dnstap_sample` from `geolb.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The reader's unix socket.
    pub socket: PathBuf,
    /// Log one query in this many (at least 1).
    pub sample: u32,
}

/// Messages sent and dropped, summed at `/metrics`. Each UDP thread writes only its
/// own counter; the writer and the TCP connections share the rest.
#[derive(Debug, Default)]
pub struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    threads: Mutex<Vec<Arc<ThreadCounter>>>,
}

/// One UDP thread's drops, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ThreadCounter(AtomicU64);

impl ThreadCounter {
    /// Only the owning thread writes: a load and a store, no locked instruction.
    fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

impl Counters {
    /// dnstap messages written to the reader.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// dnstap messages lost: full queues, no reader, a reader too slow or gone.
    pub fn dropped(&self) -> u64 {
        let threads = match self.threads.lock() {
            Ok(threads) => threads.iter().map(|t| t.0.load(Ordering::Relaxed)).sum(),
            Err(_) => 0,
        };
        self.dropped.load(Ordering::Relaxed) + threads
    }

    fn register(&self) -> Arc<ThreadCounter> {
        let counter = Arc::new(ThreadCounter::default());
        if let Ok(mut threads) = self.threads.lock() {
            threads.push(counter.clone());
        }
        counter
    }
}

/// One query to log, with its response when one was sent.
#[derive(Debug, Default)]
pub struct Entry {
    protocol: Option<Protocol>,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    query_time: Time,
    response_time: Time,
    query: Vec<u8>,
    response: Vec<u8>,
    answered: bool,
}

impl Entry {
    /// dnstap messages this entry becomes.
    fn messages(&self) -> u64 {
        1 + u64::from(self.answered)
    }
}

/// A queue from one producer to the writer: entries to write, and (UDP) the way
/// back for their buffers.
struct Queue {
    full: Receiver<Entry>,
    free: Option<SyncSender<Entry>>,
}

struct Shared {
    counters: Arc<Counters>,
    sample: u32,
    /// Queues made since the writer last looked.
    new_queues: Mutex<Vec<Queue>>,
    sleeping: AtomicBool,
    stop: AtomicBool,
    writer: Mutex<Option<Thread>>,
}

impl Shared {
    /// Wakes the writer if it sleeps; one shared load otherwise.
    fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst)
            && self.sleeping.swap(false, Ordering::SeqCst)
            && let Ok(writer) = self.writer.lock()
            && let Some(writer) = writer.as_ref()
        {
            writer.unpark();
        }
    }

    fn add_queue(&self, queue: Queue) {
        if let Ok(mut queues) = self.new_queues.lock() {
            queues.push(queue);
        }
    }
}

/// The running dnstap writer; clones share it.
#[derive(Clone)]
pub struct Dnstap {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Dnstap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnstap")
            .field("sample", &self.shared.sample)
            .finish_non_exhaustive()
    }
}

impl Dnstap {
    /// Starts the writer thread; it connects to `config.socket` and keeps trying.
    /// `identity` and `version` go into every message (empty: left out).
    pub fn start(
        config: &Config,
        identity: &[u8],
        version: &[u8],
        counters: Arc<Counters>,
    ) -> io::Result<Dnstap> {
        let shared = Arc::new(Shared {
            counters,
            sample: config.sample.max(1),
            new_queues: Mutex::new(Vec::new()),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let mut writer = Writer {
            shared: shared.clone(),
            path: config.socket.clone(),
            identity: identity.to_vec(),
            version: version.to_vec(),
            queues: Vec::new(),
            stream: None,
            buf: Vec::with_capacity(64 << 10),
            written: 0,
            frames: VecDeque::new(),
            scratch: Vec::new(),
            next_attempt: Instant::now(),
            backoff: MIN_BACKOFF,
            failing: false,
        };
        let handle = std::thread::Builder::new()
            .name("dnstap".to_string())
            .spawn(move || writer.run())?;
        if let Ok(mut slot) = shared.writer.lock() {
            *slot = Some(handle.thread().clone());
        }
        Ok(Dnstap {
            shared,
            thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// A queue for one UDP thread, whose socket is bound to `local` (`None` or an
    /// unspecified address: left out of the messages).
    pub fn sink(&self, local: Option<SocketAddr>) -> Sink {
        let (full_tx, full_rx) = sync_channel(QUEUE);
        let (free_tx, free_rx) = sync_channel(QUEUE);
        for _ in 0..QUEUE {
            let _ = free_tx.try_send(Entry::default());
        }
        self.shared.add_queue(Queue {
            full: full_rx,
            free: Some(free_tx),
        });
        Sink {
            every: self.shared.sample,
            countdown: 0,
            full: full_tx,
            free: free_rx,
            spare: None,
            local: local.filter(|a| !a.ip().is_unspecified()),
            dropped: self.shared.counters.register(),
            unwoken: 0,
            shared: self.shared.clone(),
        }
    }

    /// The queue TCP connections share.
    pub fn tcp(&self) -> TcpLog {
        let (full_tx, full_rx) = sync_channel(QUEUE);
        self.shared.add_queue(Queue {
            full: full_rx,
            free: None,
        });
        TcpLog {
            every: self.shared.sample,
            full: full_tx,
            shared: self.shared.clone(),
        }
    }

    /// Writes what is queued, ends the stream (STOP/FINISH) and stops the writer;
    /// messages logged afterwards are dropped.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

/// One UDP thread's end of its queue (its messages are UDP).
pub struct Sink {
    every: u32,
    countdown: u32,
    full: SyncSender<Entry>,
    free: Receiver<Entry>,
    spare: Option<Entry>,
    local: Option<SocketAddr>,
    dropped: Arc<ThreadCounter>,
    /// Entries queued since this thread last woke the writer.
    unwoken: u32,
    shared: Arc<Shared>,
}

impl Sink {
    /// Whether this query is one to log: every `dnstap_sample`th, from the first.
    #[inline]
    pub fn sampled(&mut self) -> bool {
        if self.countdown == 0 {
            self.countdown = self.every - 1;
            true
        } else {
            self.countdown -= 1;
            false
        }
    }

    /// Queues a query received at `query_time` and the response sent, if any. Copies
    /// both into a recycled entry; when none is free, counts the messages as dropped.
    pub fn log(
        &mut self,
        client: SocketAddr,
        query_time: Time,
        query: &[u8],
        response: Option<&[u8]>,
    ) {
        let Some(mut entry) = self.spare.take().or_else(|| self.free.try_recv().ok()) else {
            self.dropped.add(1 + u64::from(response.is_some()));
            return;
        };
        fill(
            &mut entry,
            Protocol::Udp,
            client,
            self.local,
            query_time,
            query,
            response,
        );
        match self.full.try_send(entry) {
            Ok(()) => {
                self.unwoken += 1;
                if self.unwoken >= WAKE_AFTER {
                    self.unwoken = 0;
                    self.shared.wake();
                }
            }
            Err(TrySendError::Full(entry) | TrySendError::Disconnected(entry)) => {
                self.dropped.add(entry.messages());
                self.spare = Some(entry);
            }
        }
    }
}

fn fill(
    entry: &mut Entry,
    protocol: Protocol,
    client: SocketAddr,
    server: Option<SocketAddr>,
    query_time: Time,
    query: &[u8],
    response: Option<&[u8]>,
) {
    entry.protocol = Some(protocol);
    entry.client = Some(client);
    entry.server = server;
    entry.query_time = query_time;
    entry.response_time = if response.is_some() {
        Time::now()
    } else {
        Time::default()
    };
    entry.query.clear();
    entry.query.extend_from_slice(query);
    entry.response.clear();
    entry.answered = response.is_some();
    if let Some(response) = response {
        entry.response.extend_from_slice(response);
    }
}

/// The queue TCP connections share; each connection keeps its own sample count.
#[derive(Clone)]
pub struct TcpLog {
    every: u32,
    full: SyncSender<Entry>,
    shared: Arc<Shared>,
}

impl TcpLog {
    /// A connection's sample counter, started at a random phase so that connections
    /// of one query each are sampled one in N too.
    pub fn counter(&self) -> u32 {
        rand::random_range(0..self.every)
    }

    /// Whether this query of the connection is one to log.
    pub fn sampled(&self, countdown: &mut u32) -> bool {
        if *countdown == 0 {
            *countdown = self.every - 1;
            true
        } else {
            *countdown -= 1;
            false
        }
    }

    /// Queues a query and its response, if any (a fresh entry: TCP allocates per
    /// query anyway); a full queue drops and counts them. The writer finds it at its
    /// next drain.
    pub fn log(
        &self,
        client: SocketAddr,
        server: Option<SocketAddr>,
        query_time: Time,
        query: &[u8],
        response: Option<&[u8]>,
    ) {
        let mut entry = Entry::default();
        fill(
            &mut entry,
            Protocol::Tcp,
            client,
            server,
            query_time,
            query,
            response,
        );
        match self.full.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(entry) | TrySendError::Disconnected(entry)) => {
                self.shared
                    .counters
                    .dropped
                    .fetch_add(entry.messages(), Ordering::Relaxed);
            }
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    path: PathBuf,
    identity: Vec<u8>,
    version: Vec<u8>,
    queues: Vec<Queue>,
    stream: Option<UnixStream>,
    /// Encoded frames not yet written, from `written` on.
    buf: Vec<u8>,
    written: usize,
    /// The end offset in `buf` of each entry's frames, and its message count.
    frames: VecDeque<(usize, u64)>,
    scratch: Vec<u8>,
    next_attempt: Instant,
    backoff: Duration,
    /// Whether the last attempt failed (logged once per outage).
    failing: bool,
}

impl Writer {
    fn run(&mut self) {
        loop {
            let stopping = self.shared.stop.load(Ordering::SeqCst);
            if let Ok(mut new) = self.shared.new_queues.lock() {
                self.queues.append(&mut new);
            }
            if self.stream.is_none() && Instant::now() >= self.next_attempt {
                self.connect();
            }
            let drained = self.drain();
            self.write();
            if stopping {
                self.end();
                return;
            }
            // A full pass (some queue had a queue's length waiting) goes again at
            // once; otherwise the writer sleeps until the next drain or a wake.
            if drained < QUEUE {
                self.shared.sleeping.store(true, Ordering::SeqCst);
                std::thread::park_timeout(DRAIN_EVERY);
                self.shared.sleeping.store(false, Ordering::SeqCst);
            }
        }
    }

    fn connect(&mut self) {
        match open(&self.path) {
            Ok(stream) => {
                tracing::info!(socket = %self.path.display(), "dnstap connected");
                self.stream = Some(stream);
                self.backoff = MIN_BACKOFF;
                self.failing = false;
            }
            Err(error) => {
                if self.failing {
                    tracing::debug!(socket = %self.path.display(), %error, "dnstap reader still unavailable");
                } else {
                    tracing::warn!(socket = %self.path.display(), %error, "dnstap reader unavailable; messages are dropped until it is back");
                    self.failing = true;
                }
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Takes every queued entry (at most a queue's length from each per call):
    /// encodes it when a reader is connected and not too far behind, else counts it
    /// dropped; gives UDP entries back. Returns how many it took.
    fn drain(&mut self) -> usize {
        let mut taken = 0;
        let mut i = 0;
        while i < self.queues.len() {
            let mut gone = false;
            for _ in 0..QUEUE {
                let entry = match self.queues.get(i).map(|q| q.full.try_recv()) {
                    Some(Ok(entry)) => entry,
                    Some(Err(TryRecvError::Empty)) | None => break,
                    Some(Err(TryRecvError::Disconnected)) => {
                        gone = true;
                        break;
                    }
                };
                taken += 1;
                let mut entry = entry;
                if self.stream.is_some() && self.pending() < MAX_PENDING {
                    self.encode(&entry);
                } else {
                    self.shared
                        .counters
                        .dropped
                        .fetch_add(entry.messages(), Ordering::Relaxed);
                }
                if let Some(free) = self.queues.get(i).and_then(|q| q.free.as_ref()) {
                    entry.query.shrink_to(KEEP_CAPACITY);
                    entry.response.shrink_to(KEEP_CAPACITY);
                    let _ = free.try_send(entry);
                }
            }
            if gone {
                self.queues.swap_remove(i);
            } else {
                i += 1;
            }
        }
        taken
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.written
    }

    fn encode(&mut self, entry: &Entry) {
        let (Some(protocol), Some(client)) = (entry.protocol, entry.client) else {
            return;
        };
        let mut event = proto::Event {
            kind: Kind::AuthQuery,
            protocol,
            query_address: client,
            response_address: entry.server,
            query_time: entry.query_time,
            response_time: None,
            query_message: Some(&entry.query),
            response_message: None,
        };
        let (identity, version) = (&self.identity, &self.version);
        let scratch = &mut self.scratch;
        fstrm::data_frame(&mut self.buf, |out| {
            proto::encode(out, scratch, identity, version, &event)
        });
        if entry.answered {
            event.kind = Kind::AuthResponse;
            event.query_message = None;
            event.response_time = Some(entry.response_time);
            event.response_message = Some(&entry.response);
            fstrm::data_frame(&mut self.buf, |out| {
                proto::encode(out, scratch, identity, version, &event)
            });
        }
        self.frames.push_back((self.buf.len(), entry.messages()));
    }

    /// Writes what it can within `WRITE_WAIT`; a failed stream is closed, and what it
    /// still held is counted dropped.
    fn write(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut failed = None;
        while self.written < self.buf.len() {
            match stream.write(&self.buf[self.written..]) {
                Ok(0) => {
                    failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => self.written += n,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let mut sent = 0;
        while let Some(&(end, messages)) = self.frames.front() {
            if end > self.written {
                break;
            }
            sent += messages;
            self.frames.pop_front();
        }
        self.shared.counters.sent.fetch_add(sent, Ordering::Relaxed);
        if let Some(error) = failed {
            tracing::warn!(socket = %self.path.display(), %error, "dnstap reader gone; reconnecting");
            self.disconnect();
            self.next_attempt = Instant::now() + self.backoff;
        } else if self.written == self.buf.len() {
            self.buf.clear();
            self.written = 0;
            self.frames.clear();
        } else if self.written > self.buf.len() / 2 {
            // Keep the unwritten tail at the front, so the buffer does not grow.
            self.buf.drain(..self.written);
            for frame in &mut self.frames {
                frame.0 -= self.written;
            }
            self.written = 0;
        }
    }

    /// Drops the stream; the messages not fully written are lost.
    fn disconnect(&mut self) {
        let lost: u64 = self.frames.iter().map(|f| f.1).sum();
        self.shared
            .counters
            .dropped
            .fetch_add(lost, Ordering::Relaxed);
        self.frames.clear();
        self.buf.clear();
        self.written = 0;
        self.stream = None;
    }

    /// At shutdown: writes the rest (within the handshake deadline) and ends the
    /// stream with STOP/FINISH, so the reader closes its file cleanly.
    fn end(&mut self) {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        while self.stream.is_some() && self.pending() > 0 && Instant::now() < deadline {
            self.write();
        }
        if self.pending() > 0 {
            self.disconnect();
        }
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
            if let Err(error) = fstrm::finish(&mut stream) {
                tracing::debug!(%error, "dnstap stream did not finish cleanly");
            }
        }
    }
}

/// Connects and shakes hands; the stream then waits at most `WRITE_WAIT` per write.
fn open(path: &Path) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    fstrm::handshake(&mut stream)?;
    stream.set_write_timeout(Some(WRITE_WAIT))?;
    Ok(stream)
}

#[cfg(test)]
mod tests;
