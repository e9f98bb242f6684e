//! Frame Streams, the framing dnstap travels in, as a writer over a bidirectional
//! stream: READY (with the content type) → ACCEPT → START, then data frames (a
//! big-endian length and the payload), and STOP → FINISH at the end. Control frames
//! are an escape (a zero length), their own length, a type, and fields (the content
//! type is field 1).

use std::io::{self, Read, Write};

/// The content type of dnstap.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

pub const ACCEPT: u32 = 1;
pub const START: u32 = 2;
pub const STOP: u32 = 3;
pub const READY: u32 = 4;
pub const FINISH: u32 = 5;
const FIELD_CONTENT_TYPE: u32 = 1;
/// The longest control frame a reader may send (the reference implementation's limit).
const MAX_CONTROL: usize = 512;

/// A control frame of `kind`, with the content type when `content_type`.
pub fn control(kind: u32, content_type: bool) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if content_type {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut frame = 0u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Appends a data frame holding `payload`, written by `fill` (its length is patched
/// in afterwards).
pub fn data_frame(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// A control frame as read: its type and content types.
#[derive(Debug, PartialEq, Eq)]
pub struct Control {
    pub kind: u32,
    pub content_types: Vec<Vec<u8>>,
}

/// Reads one control frame.
pub fn read_control(stream: &mut impl Read) -> io::Result<Control> {
    let mut word = [0u8; 4];
    stream.read_exact(&mut word)?;
    if word != [0; 4] {
        return Err(invalid("expected a control frame, got a data frame"));
    }
    stream.read_exact(&mut word)?;
    let len = u32::from_be_bytes(word) as usize;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(invalid("control frame of a bad length"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    parse_control(&body).ok_or_else(|| invalid("malformed control frame"))
}

fn parse_control(body: &[u8]) -> Option<Control> {
    let (kind, mut rest) = body.split_first_chunk::<4>()?;
    let mut content_types = Vec::new();
    while !rest.is_empty() {
        let (field, after) = rest.split_first_chunk::<4>()?;
        let (len, after) = after.split_first_chunk::<4>()?;
        let (value, after) = after.split_at_checked(u32::from_be_bytes(*len) as usize)?;
        if u32::from_be_bytes(*field) == FIELD_CONTENT_TYPE {
            content_types.push(value.to_vec());
        }
        rest = after;
    }
    Some(Control {
        kind: u32::from_be_bytes(*kind),
        content_types,
    })
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// The writer's side of the handshake: READY, the reader's ACCEPT (which must offer
/// dnstap when it names content types), START.
pub fn handshake(stream: &mut (impl Read + Write)) -> io::Result<()> {
    stream.write_all(&control(READY, true))?;
    let accept = read_control(stream)?;
    if accept.kind != ACCEPT {
        return Err(invalid("the reader did not accept"));
    }
    if !accept.content_types.is_empty() && !accept.content_types.iter().any(|t| t == CONTENT_TYPE) {
        return Err(invalid("the reader does not accept protobuf:dnstap.Dnstap"));
    }
    stream.write_all(&control(START, true))?;
    stream.flush()
}

/// The writer's side of the end: STOP, then the reader's FINISH.
pub fn finish(stream: &mut (impl Read + Write)) -> io::Result<()> {
    stream.write_all(&control(STOP, false))?;
    stream.flush()?;
    let finish = read_control(stream)?;
    if finish.kind != FINISH {
        return Err(invalid("the reader did not finish"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_the_reference_bytes() {
        let ready = control(READY, true);
        let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 34, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 22];
        expected.extend_from_slice(b"protobuf:dnstap.Dnstap");
        assert_eq!(ready, expected);
        assert_eq!(
            control(STOP, false),
            vec![0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]
        );
    }

    #[test]
    fn a_data_frame_carries_its_length() {
        let mut out = vec![9];
        data_frame(&mut out, |out| out.extend_from_slice(b"hello"));
        assert_eq!(out, [9, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    }

    /// A reader's answers on one side, what the writer wrote on the other.
    struct Pipe {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn handshake_and_finish() {
        let mut input = control(ACCEPT, true);
        input.extend_from_slice(&control(FINISH, false));
        let mut pipe = Pipe {
            input: io::Cursor::new(input),
            output: Vec::new(),
        };
        handshake(&mut pipe).unwrap();
        finish(&mut pipe).unwrap();
        let mut expected = control(READY, true);
        expected.extend_from_slice(&control(START, true));
        expected.extend_from_slice(&control(STOP, false));
        assert_eq!(pipe.output, expected);
    }

    #[test]
    fn a_reader_of_another_content_type_is_refused() {
        let mut accept = vec![0, 0, 0, 0, 0, 0, 0, 15, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 3];
        accept.extend_from_slice(b"foo");
        let mut pipe = Pipe {
            input: io::Cursor::new(accept),
            output: Vec::new(),
        };
        assert!(handshake(&mut pipe).is_err());
        for garbage in [
            vec![0, 0, 0, 5, 1, 2, 3, 4, 5],
            vec![0, 0, 0, 0, 0xff, 0, 0, 0],
        ] {
            let mut pipe = Pipe {
                input: io::Cursor::new(garbage),
                output: Vec::new(),
            };
            assert!(handshake(&mut pipe).is_err());
        }
    }
}
