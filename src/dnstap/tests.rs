use std::io::Read;
use std::os::unix::net::UnixListener;

use super::proto::tests::{Value, decode};
use super::*;

fn config(dir: &Path, sample: u32) -> Config {
    Config {
        socket: dir.join("dnstap.sock"),
        sample,
    }
}

/// Reads one frame: `Ok(Some(payload))` for data, `Ok(None)` for a control frame.
fn read_frame(stream: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut word = [0u8; 4];
    stream.read_exact(&mut word)?;
    let len = u32::from_be_bytes(word) as usize;
    if len == 0 {
        stream.read_exact(&mut word)?;
        let mut body = vec![0; u32::from_be_bytes(word) as usize];
        stream.read_exact(&mut body)?;
        return Ok(None);
    }
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// The reader's side of the handshake.
fn accept(listener: &UnixListener) -> UnixStream {
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ready = fstrm::read_control(&mut stream).unwrap();
    assert_eq!(ready.kind, fstrm::READY);
    assert_eq!(ready.content_types, vec![fstrm::CONTENT_TYPE.to_vec()]);
    stream
        .write_all(&fstrm::control(fstrm::ACCEPT, true))
        .unwrap();
    let start = fstrm::read_control(&mut stream).unwrap();
    assert_eq!(start.kind, fstrm::START);
    stream
}

/// The `Message` inside a `Dnstap` payload, decoded.
fn message(payload: &[u8]) -> Vec<(u32, Value)> {
    let outer = decode(payload).unwrap();
    let inner = outer
        .iter()
        .find_map(|(field, value)| match value {
            Value::Bytes(inner) if *field == 14 => Some(inner.clone()),
            _ => None,
        })
        .unwrap();
    decode(&inner).unwrap()
}

fn field(message: &[(u32, Value)], number: u32) -> Option<&Value> {
    message.iter().find(|(f, _)| *f == number).map(|(_, v)| v)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn queries_reach_the_reader_sampled_and_the_stream_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("dnstap.sock")).unwrap();
    let counters = Arc::new(Counters::default());
    let dnstap = Dnstap::start(&config(dir.path(), 3), b"ns1", b"v1", counters.clone()).unwrap();
    let mut reader = accept(&listener);
    let mut sink = dnstap.sink(Some("127.0.0.1:53".parse().unwrap()));
    let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let mut logged = 0;
    for i in 0..9u8 {
        if sink.sampled() {
            logged += 1;
            let response = [i, 1];
            let response = (i % 2 == 0).then_some(&response[..]);
            sink.log(client, Time::now(), &[i], response);
        }
    }
    assert_eq!(logged, 3);
    // Queries 0, 3 and 6: answered, unanswered, answered.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let payload = read_frame(&mut reader).unwrap().unwrap();
        let m = message(&payload);
        let kind = field(&m, 1).cloned();
        assert_eq!(field(&m, 4), Some(&Value::Bytes(vec![192, 0, 2, 1])));
        assert_eq!(field(&m, 6), Some(&Value::Int(4000)));
        assert_eq!(field(&m, 5), Some(&Value::Bytes(vec![127, 0, 0, 1])));
        assert_eq!(field(&m, 7), Some(&Value::Int(53)));
        seen.push((kind, field(&m, 10).cloned(), field(&m, 14).cloned()));
    }
    assert_eq!(
        seen,
        vec![
            (Some(Value::Int(1)), Some(Value::Bytes(vec![0])), None),
            (Some(Value::Int(2)), None, Some(Value::Bytes(vec![0, 1]))),
            (Some(Value::Int(1)), Some(Value::Bytes(vec![3])), None),
            (Some(Value::Int(1)), Some(Value::Bytes(vec![6])), None),
            (Some(Value::Int(2)), None, Some(Value::Bytes(vec![6, 1]))),
        ]
    );
    wait_until("the sent count", || counters.sent() == 5);
    // Shutdown sends STOP and waits for FINISH.
    let finisher = std::thread::spawn(move || {
        assert_eq!(read_frame(&mut reader).unwrap(), None);
        reader
            .write_all(&fstrm::control(fstrm::FINISH, false))
            .unwrap();
    });
    dnstap.shutdown();
    finisher.join().unwrap();
    assert_eq!(counters.dropped(), 0);
}

#[test]
fn without_a_reader_messages_are_dropped_and_counted_and_logging_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let counters = Arc::new(Counters::default());
    let dnstap = Dnstap::start(&config(dir.path(), 1), b"", b"", counters.clone()).unwrap();
    let mut sink = dnstap.sink(None);
    let tcp = dnstap.tcp();
    let client: SocketAddr = "[2001:db8::1]:53000".parse().unwrap();
    let started = Instant::now();
    let n = 3 * QUEUE as u64;
    for _ in 0..n {
        assert!(sink.sampled());
        sink.log(client, Time::now(), &[0; 40], Some(&[0; 80]));
        tcp.log(client, None, Time::now(), &[0; 40], None);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("every message counted dropped", || {
        counters.dropped() == 3 * n
    });
    assert_eq!(counters.sent(), 0);
    dnstap.shutdown();
}

#[test]
fn the_writer_reconnects_when_the_reader_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let counters = Arc::new(Counters::default());
    let dnstap = Dnstap::start(&config(dir.path(), 1), b"", b"", counters.clone()).unwrap();
    let mut sink = dnstap.sink(None);
    let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    // No reader yet: dropped.
    sink.log(client, Time::now(), &[1], None);
    wait_until("a drop", || counters.dropped() == 1);
    let listener = UnixListener::bind(dir.path().join("dnstap.sock")).unwrap();
    let mut reader = accept(&listener);
    sink.log(client, Time::now(), &[2], None);
    let m = message(&read_frame(&mut reader).unwrap().unwrap());
    assert_eq!(field(&m, 10), Some(&Value::Bytes(vec![2])));
    // The reader leaves; a new one is found.
    drop(reader);
    let mut reader = loop {
        sink.log(client, Time::now(), &[3], None);
        listener.set_nonblocking(true).unwrap();
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                break stream;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let ready = fstrm::read_control(&mut reader).unwrap();
    assert_eq!(ready.kind, fstrm::READY);
    reader
        .write_all(&fstrm::control(fstrm::ACCEPT, true))
        .unwrap();
    assert_eq!(fstrm::read_control(&mut reader).unwrap().kind, fstrm::START);
    sink.log(client, Time::now(), &[4], None);
    // Queries logged between the reconnect and this one may arrive first.
    loop {
        let m = message(&read_frame(&mut reader).unwrap().unwrap());
        if field(&m, 10) == Some(&Value::Bytes(vec![4])) {
            break;
        }
    }
    drop(reader);
    dnstap.shutdown();
}

#[test]
fn a_reader_that_stops_reading_loses_messages_but_never_stalls_the_logger() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("dnstap.sock")).unwrap();
    let counters = Arc::new(Counters::default());
    let dnstap = Dnstap::start(&config(dir.path(), 1), b"", b"", counters.clone()).unwrap();
    // Shakes hands, then never reads again.
    let _reader = accept(&listener);
    let mut sink = dnstap.sink(None);
    let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let query = vec![7u8; 2000];
    let response = vec![8u8; 4000];
    let started = Instant::now();
    let entries = 8 * QUEUE as u64;
    for _ in 0..entries {
        sink.log(client, Time::now(), &query, Some(&response));
    }
    // 48 MB of messages against a 4 MiB buffer and the socket's: most are lost.
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("drops", || counters.dropped() > 0);
    // Shutdown gives up on the reader within its deadline; every message is then
    // either sent or counted dropped.
    dnstap.shutdown();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(counters.sent() + counters.dropped(), 2 * entries);
}
