//! RFC 1035 master files (section 5.1): `$ORIGIN`, `$TTL` (RFC 2308), `$INCLUDE`,
//! relative names, `@`, owners carried over from the previous record, parentheses
//! across lines, quoted strings and `;` comments.
//!
//! A master file is read straight into `Record`s, each with the file and line it came
//! from, and every error carries its file and line. Our own reader rather than
//! hickory-proto's `Parser`: that one reports no line numbers, refuses `$INCLUDE` with
//! an origin, and builds a sorted map of record sets the model does not need.
//! The record types geolb serves most (A, AAAA, TXT, CNAME, NS, PTR, MX, SRV, SOA) are
//! read here directly; the others go through hickory-proto's presentation parser.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::config::ConfigError;

/// `$INCLUDE` nesting deeper than this is an error (a loop is reported as one first).
const MAX_INCLUDE_DEPTH: usize = 16;

/// One record and where it was written.
pub struct Located {
    pub record: Record,
    /// Index into `MasterFile::files`.
    pub file: u32,
    pub line: u32,
}

/// The records of a master file and of the files it includes.
#[derive(Default)]
pub struct MasterFile {
    pub records: Vec<Located>,
    /// The file itself first, then every included file, in the order first read.
    pub files: Vec<PathBuf>,
    /// FNV-1a over the text of every file read, in order: changes when any file does.
    pub digest: u32,
}

impl MasterFile {
    /// The error for the record at `index`.
    pub fn error_at(&self, index: usize, key: &str, message: String) -> ConfigError {
        let (file, line) = match self.records.get(index) {
            Some(r) => (
                self.files.get(r.file as usize).cloned().unwrap_or_default(),
                r.line as usize,
            ),
            None => (self.files.first().cloned().unwrap_or_default(), 0),
        };
        ConfigError {
            file,
            line,
            key: key.to_string(),
            message,
        }
    }
}

/// Reads the master file at `path` with `origin` as its initial `$ORIGIN` and
/// `default_ttl` (if any) as its initial `$TTL`. Every error is collected; records that
/// parsed are returned either way.
pub fn read(
    path: &Path,
    origin: &Name,
    default_ttl: Option<u32>,
    errors: &mut Vec<ConfigError>,
) -> MasterFile {
    let mut out = MasterFile {
        digest: FNV_OFFSET,
        ..MasterFile::default()
    };
    let mut reader = Reader {
        out: &mut out,
        errors,
        stack: Vec::new(),
    };
    reader.file(path, origin.clone(), default_ttl, None);
    out
}

/// Parses master-file text that has no `$INCLUDE` (for tests and tools).
pub fn parse_str(
    text: &str,
    path: &Path,
    origin: &Name,
    default_ttl: Option<u32>,
    errors: &mut Vec<ConfigError>,
) -> MasterFile {
    let mut out = MasterFile::default();
    out.files.push(path.to_path_buf());
    let mut reader = Reader {
        out: &mut out,
        errors,
        stack: vec![path.to_path_buf()],
    };
    reader.text(text, 0, origin.clone(), default_ttl);
    out
}

struct Reader<'a> {
    out: &'a mut MasterFile,
    errors: &'a mut Vec<ConfigError>,
    /// The files being read, outermost first, to report `$INCLUDE` loops.
    stack: Vec<PathBuf>,
}

/// Where an `$INCLUDE` was written, for errors about the included file.
struct IncludedAt {
    file: u32,
    line: u32,
}

impl Reader<'_> {
    fn error(&mut self, file: u32, line: u32, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self
                .out
                .files
                .get(file as usize)
                .cloned()
                .unwrap_or_default(),
            line: line as usize,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn file(&mut self, path: &Path, origin: Name, ttl: Option<u32>, at: Option<IncludedAt>) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                let message = format!("cannot read {}: {err}", path.display());
                match at {
                    Some(at) => self.error(at.file, at.line, "$INCLUDE", message),
                    None => self.errors.push(ConfigError {
                        file: path.to_path_buf(),
                        line: 0,
                        key: String::new(),
                        message: format!("cannot read file: {err}"),
                    }),
                }
                return;
            }
        };
        let index = self.out.files.len() as u32;
        self.out.files.push(path.to_path_buf());
        self.out.digest = fnv(self.out.digest, text.as_bytes());
        self.stack.push(path.to_path_buf());
        self.text(&text, index, origin, ttl);
        self.stack.pop();
    }

    fn text(&mut self, text: &str, file: u32, mut origin: Name, mut default_ttl: Option<u32>) {
        let mut lexer = Lexer::new(text);
        let mut tokens: Vec<Token> = Vec::new();
        let mut owner: Option<Name> = None;
        // RFC 1035: without $TTL, a record without a TTL takes the last one given.
        let mut last_ttl: Option<u32> = None;
        let mut scratch = String::new();
        loop {
            let entry = match lexer.entry(&mut tokens) {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err((line, message)) => {
                    self.error(file, line, "", message);
                    continue;
                }
            };
            let line = entry.line;
            let Some(first) = tokens.first() else {
                continue;
            };
            let first_text = first.text(text);
            if !entry.blank_owner && !first.quoted && first_text.starts_with('$') {
                let args = tokens.get(1..).unwrap_or_default();
                match first_text.to_ascii_uppercase().as_str() {
                    "$ORIGIN" => match args {
                        [name] => match absolute(name.text(text), &origin) {
                            Ok(name) => origin = name.to_lowercase(),
                            Err(err) => self.error(file, line, "$ORIGIN", err),
                        },
                        _ => self.error(file, line, "$ORIGIN", "$ORIGIN takes one name"),
                    },
                    "$TTL" => match args {
                        [ttl] => match ttl_value(ttl.text(text)) {
                            Ok(ttl) => default_ttl = Some(ttl),
                            Err(err) => self.error(file, line, "$TTL", err),
                        },
                        _ => self.error(file, line, "$TTL", "$TTL takes one TTL"),
                    },
                    "$INCLUDE" => {
                        let (path, include_origin) = match args {
                            [path] => (path.text(text), Ok(origin.clone())),
                            [path, name] => (path.text(text), absolute(name.text(text), &origin)),
                            _ => {
                                self.error(
                                    file,
                                    line,
                                    "$INCLUDE",
                                    "$INCLUDE takes a file name and an optional origin",
                                );
                                continue;
                            }
                        };
                        let include_origin = match include_origin {
                            Ok(name) => name.to_lowercase(),
                            Err(err) => {
                                self.error(file, line, "$INCLUDE", err);
                                continue;
                            }
                        };
                        self.include(file, line, path, include_origin, default_ttl);
                    }
                    "$GENERATE" => self.error(
                        file,
                        line,
                        "$GENERATE",
                        "$GENERATE is not supported; expand it into records",
                    ),
                    other => self.error(
                        file,
                        line,
                        other,
                        format!("unknown directive {other} (known: $ORIGIN, $TTL, $INCLUDE)"),
                    ),
                }
                continue;
            }
            let mut rest = tokens.as_slice();
            if !entry.blank_owner {
                let Some((name, tail)) = rest.split_first() else {
                    continue;
                };
                rest = tail;
                let text_name = name.text(text);
                let parsed = if text_name == "@" {
                    Ok(origin.clone())
                } else {
                    absolute(text_name, &origin)
                };
                match parsed {
                    Ok(name) => owner = Some(name.to_lowercase()),
                    Err(err) => {
                        owner = None;
                        self.error(file, line, "", format!("bad owner name: {err}"));
                        continue;
                    }
                }
            }
            let Some(name) = owner.clone() else {
                self.error(
                    file,
                    line,
                    "",
                    "no owner name: the first record must start with one",
                );
                continue;
            };
            // [TTL] [class] type, or [class] [TTL] type.
            let mut ttl = None;
            let mut rtype = None;
            while let Some((token, tail)) = rest.split_first() {
                rest = tail;
                let word = token.text(text);
                if word.eq_ignore_ascii_case("IN") {
                    continue;
                }
                if ["CH", "HS", "CS", "ANY", "NONE"]
                    .iter()
                    .any(|c| word.eq_ignore_ascii_case(c))
                {
                    self.error(file, line, "", format!("class {word}: only IN is served"));
                    rtype = None;
                    ttl = None;
                    rest = &[];
                    break;
                }
                if ttl.is_none() && word.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                    match ttl_value(word) {
                        Ok(value) => {
                            ttl = Some(value);
                            continue;
                        }
                        Err(err) => {
                            self.error(file, line, "", err);
                            rest = &[];
                            break;
                        }
                    }
                }
                rtype = Some(word);
                break;
            }
            let Some(type_text) = rtype else {
                if !rest.is_empty() || ttl.is_some() {
                    self.error(file, line, "", "a record needs a type");
                }
                continue;
            };
            let rtype = match record_type(type_text) {
                Ok(t) => t,
                Err(err) => {
                    self.error(file, line, type_text, err);
                    continue;
                }
            };
            let ttl = match ttl.or(default_ttl).or(last_ttl) {
                Some(ttl) => ttl,
                None => {
                    self.error(
                        file,
                        line,
                        &rtype.to_string(),
                        "no TTL: give one on the record or set $TTL before it",
                    );
                    continue;
                }
            };
            last_ttl = Some(ttl);
            match rdata(rtype, rest, text, &origin, &mut scratch) {
                Ok(data) => self.out.records.push(Located {
                    record: Record::from_rdata(name, ttl, data),
                    file,
                    line,
                }),
                Err(err) => self.error(
                    file,
                    line,
                    &rtype.to_string(),
                    format!("invalid {rtype} data: {err}"),
                ),
            }
        }
    }

    fn include(&mut self, file: u32, line: u32, path: &str, origin: Name, ttl: Option<u32>) {
        let base = self
            .stack
            .last()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = base.join(path);
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if self
            .stack
            .iter()
            .any(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()) == canonical)
        {
            self.error(
                file,
                line,
                "$INCLUDE",
                format!("{} includes itself", path.display()),
            );
            return;
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            self.error(
                file,
                line,
                "$INCLUDE",
                format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} files"),
            );
            return;
        }
        self.file(&path, origin, ttl, Some(IncludedAt { file, line }));
    }
}

pub const FNV_OFFSET: u32 = 0x811c_9dc5;

/// FNV-1a, continued from `hash`.
pub fn fnv(mut hash: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// A token: a byte range of the text, and whether it was a quoted string (the range is
/// then inside the quotes, escapes not yet decoded).
#[derive(Clone, Copy)]
struct Token {
    start: u32,
    end: u32,
    quoted: bool,
}

impl Token {
    fn text(self, text: &str) -> &str {
        text.get(self.start as usize..self.end as usize)
            .unwrap_or("")
    }
}

struct Entry {
    /// The line the entry starts on (1-based).
    line: u32,
    /// The line started with a blank: the owner is the previous record's.
    blank_owner: bool,
}

struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u32,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    /// The next entry (one line, or several joined by parentheses) with at least one
    /// token; `None` at the end. On an error the rest of the entry is skipped.
    fn entry(&mut self, tokens: &mut Vec<Token>) -> Result<Option<Entry>, (u32, String)> {
        tokens.clear();
        loop {
            if self.pos >= self.bytes.len() {
                return Ok(None);
            }
            let line = self.line;
            let blank_owner = matches!(self.bytes.get(self.pos), Some(b' ' | b'\t'));
            let mut depth = 0u32;
            let mut open_line = line;
            let mut error: Option<(u32, String)> = None;
            while let Some(&byte) = self.bytes.get(self.pos) {
                match byte {
                    b'\n' => {
                        self.pos += 1;
                        self.line += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b' ' | b'\t' | b'\r' => self.pos += 1,
                    b';' => {
                        while self.bytes.get(self.pos).is_some_and(|&b| b != b'\n') {
                            self.pos += 1;
                        }
                    }
                    b'(' => {
                        if depth == 0 {
                            open_line = self.line;
                        }
                        depth += 1;
                        self.pos += 1;
                    }
                    b')' => {
                        self.pos += 1;
                        if depth == 0 {
                            error.get_or_insert((self.line, "unbalanced \")\"".to_string()));
                        } else {
                            depth -= 1;
                        }
                    }
                    b'"' => {
                        let start = self.pos + 1;
                        let mut at = start;
                        loop {
                            match self.bytes.get(at) {
                                Some(b'\\') => at += 2,
                                Some(b'"') => break,
                                Some(b'\n') | None => {
                                    error.get_or_insert((
                                        self.line,
                                        "unterminated quoted string".to_string(),
                                    ));
                                    break;
                                }
                                Some(_) => at += 1,
                            }
                        }
                        let end = at.min(self.bytes.len());
                        tokens.push(Token {
                            start: start as u32,
                            end: end as u32,
                            quoted: true,
                        });
                        // Past the closing quote (or to the newline that ended it).
                        self.pos = if self.bytes.get(at) == Some(&b'"') {
                            at + 1
                        } else {
                            end
                        };
                    }
                    _ => {
                        let start = self.pos;
                        while let Some(&b) = self.bytes.get(self.pos) {
                            match b {
                                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"' => break,
                                b'\\' => self.pos = (self.pos + 2).min(self.bytes.len()),
                                _ => self.pos += 1,
                            }
                        }
                        tokens.push(Token {
                            start: start as u32,
                            end: self.pos as u32,
                            quoted: false,
                        });
                    }
                }
            }
            if depth > 0 {
                error.get_or_insert((open_line, "\"(\" is never closed".to_string()));
            }
            if let Some(error) = error {
                tokens.clear();
                return Err(error);
            }
            if !tokens.is_empty() {
                return Ok(Some(Entry { line, blank_owner }));
            }
        }
    }
}

/// A name in presentation format, made absolute against `origin` unless it ends in a dot.
fn absolute(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "@" {
        return Ok(origin.clone());
    }
    let name = Name::from_ascii(text).map_err(|err| format!("\"{text}\": {err}"))?;
    if name.is_fqdn() {
        Ok(name)
    } else {
        name.append_domain(origin)
            .map_err(|err| format!("\"{text}\" under {origin}: {err}"))
    }
}

/// A TTL in seconds or with units (`1h30m`), at most 2^31 - 1 (RFC 2181 section 8).
fn ttl_value(text: &str) -> Result<u32, String> {
    match hickory_proto::serialize::txt::parse_ttl(text) {
        Ok(ttl) if ttl <= i32::MAX as u32 => Ok(ttl),
        _ => Err(format!(
            "bad TTL \"{text}\" (seconds up to 2147483647, or units such as 1h30m)"
        )),
    }
}

fn record_type(text: &str) -> Result<RecordType, String> {
    match RecordType::from_str(&text.to_ascii_uppercase()) {
        Ok(t) if t == RecordType::SOA || crate::model::is_static_type(t) => Ok(t),
        Ok(t) => Err(format!("type {t} cannot be a static record here")),
        Err(_) => Err(format!("unknown record type \"{text}\"")),
    }
}

fn rdata(
    rtype: RecordType,
    tokens: &[Token],
    text: &str,
    origin: &Name,
    scratch: &mut String,
) -> Result<RData, String> {
    let number = |word: &str, what: &str| -> Result<u16, String> {
        word.parse::<u16>()
            .map_err(|_| format!("{what} \"{word}\" is not a number from 0 to 65535"))
    };
    Ok(match rtype {
        RecordType::A => {
            let w = single(tokens, text, rtype)?;
            RData::A(A(
                Ipv4Addr::from_str(w).map_err(|_| format!("\"{w}\" is not an IPv4 address"))?
            ))
        }
        RecordType::AAAA => {
            let w = single(tokens, text, rtype)?;
            RData::AAAA(AAAA(
                Ipv6Addr::from_str(w).map_err(|_| format!("\"{w}\" is not an IPv6 address"))?,
            ))
        }
        RecordType::CNAME => RData::CNAME(CNAME(absolute(single(tokens, text, rtype)?, origin)?)),
        RecordType::NS => RData::NS(NS(absolute(single(tokens, text, rtype)?, origin)?)),
        RecordType::PTR => RData::PTR(PTR(absolute(single(tokens, text, rtype)?, origin)?)),
        RecordType::MX => {
            let [preference, exchange] = fields(tokens, text, rtype)?;
            RData::MX(MX::new(
                number(preference, "preference")?,
                absolute(exchange, origin)?,
            ))
        }
        RecordType::SRV => {
            let [priority, weight, port, target] = fields(tokens, text, rtype)?;
            RData::SRV(SRV::new(
                number(priority, "priority")?,
                number(weight, "weight")?,
                number(port, "port")?,
                absolute(target, origin)?,
            ))
        }
        RecordType::SOA => {
            let [mname, rname, serial, refresh, retry, expire, minimum] =
                fields(tokens, text, rtype)?;
            let serial = serial
                .parse::<u32>()
                .map_err(|_| format!("serial \"{serial}\" is not a 32-bit number"))?;
            let time = |word: &str| ttl_value(word).map(|t| t as i32);
            RData::SOA(SOA::new(
                absolute(mname, origin)?,
                absolute(rname, origin)?,
                serial,
                time(refresh)?,
                time(retry)?,
                time(expire)?,
                ttl_value(minimum)?,
            ))
        }
        RecordType::TXT => {
            if tokens.is_empty() {
                return Err("TXT takes at least one string".to_string());
            }
            let mut strings: Vec<Vec<u8>> = Vec::with_capacity(tokens.len());
            for token in tokens {
                let bytes = unescape(token.text(text))?;
                if bytes.len() > 255 {
                    return Err(format!(
                        "a string is {} bytes long; each is at most 255 (split it into several)",
                        bytes.len()
                    ));
                }
                strings.push(bytes);
            }
            RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
        }
        _ => {
            // The presentation text again, quoted strings quoted, for hickory-proto.
            scratch.clear();
            for (i, token) in tokens.iter().enumerate() {
                if i > 0 {
                    scratch.push(' ');
                }
                if token.quoted {
                    scratch.push('"');
                    scratch.push_str(token.text(text));
                    scratch.push('"');
                } else {
                    scratch.push_str(token.text(text));
                }
            }
            if rtype == RecordType::DS {
                return crate::model::parse_ds(scratch);
            }
            let data = crate::model::absolutize_data(rtype, scratch, origin);
            RData::try_from_str(rtype, &data).map_err(|err| err.to_string())?
        }
    })
}

/// Exactly `N` fields.
fn fields<'t, const N: usize>(
    tokens: &[Token],
    text: &'t str,
    rtype: RecordType,
) -> Result<[&'t str; N], String> {
    let found: Vec<&str> = tokens.iter().map(|t| t.text(text)).collect();
    found.try_into().map_err(|found: Vec<&str>| {
        format!(
            "{rtype} takes {N} field{}, found {}",
            if N == 1 { "" } else { "s" },
            found.len()
        )
    })
}

fn single<'t>(tokens: &[Token], text: &'t str, rtype: RecordType) -> Result<&'t str, String> {
    match tokens {
        [token] => Ok(token.text(text)),
        _ => Err(format!("{rtype} takes 1 field, found {}", tokens.len())),
    }
}

/// The bytes of a character string: `\X` is X, `\DDD` is the byte DDD (decimal).
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'\\') {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1..i + 4) {
            Some(d) if d.iter().all(u8::is_ascii_digit) => {
                let value = d
                    .iter()
                    .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'));
                let byte = u8::try_from(value)
                    .map_err(|_| format!("escape \\{value} is not a byte (0 to 255)"))?;
                out.push(byte);
                i += 4;
            }
            _ => match bytes.get(i + 1) {
                Some(&c) if !c.is_ascii_digit() => {
                    out.push(c);
                    i += 2;
                }
                _ => return Err("an escape needs a character or three digits".to_string()),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
