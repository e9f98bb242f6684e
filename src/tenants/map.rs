//! The tenant map file: parsing it into a [`TenantTable`] and writing one back.
//!
//! This file owns the on-disk text format, a strict subset of TOML: one
//! `tenant = "shard"` pair per line, bare or quoted tenant names, `#` comments and
//! blank lines. It parses by hand because a million-line map must load in a fraction
//! of a second, and it refuses anything it does not understand (tables, dotted keys,
//! escapes, other value types) with an error naming the line, rather than skipping
//! it. It reports every error in the file, not just the first. It must not touch the
//! file system: callers read and write the bytes, so that the journal code alone
//! decides how files are replaced.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::table::TableBuilder;
use super::{ShardNames, TenantTable, validate_tenant_name};

/// One problem in a tenant map file.
///
/// Displays as `file:line: key: message`, or `file:line: message` when the line has
/// no readable key. `line` is 1-based; 0 means the problem concerns the whole file
/// (for example, it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for MapError {}

/// The comment at the top of every map file geolb writes.
pub const MAP_HEADER: &str = "\
# Tenant map: one `tenant = \"shard\"` line per tenant.
# geolb rewrites this file to fold in changes made through its admin API.
# Hand edits are fine: send geolb SIGHUP afterwards so it reloads the file.
";

/// Parses a tenant map. `path` is only used in error messages.
///
/// Tenant names are validated and lower-cased; shard names must be in `shards`.
/// Duplicate tenants (also when they differ only in letter case) are errors. On
/// failure, every error in the file is returned, ordered by line.
pub fn parse_map(
    path: &Path,
    text: &str,
    shards: &ShardNames,
) -> Result<TenantTable, Vec<MapError>> {
    let mut errors = Vec::new();
    let error = |line: usize, key: &str, message: String| MapError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Size the staging for the file: lines are about half name, half the rest.
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    let mut staged = TableBuilder::with_capacity(lines, text.len() / 2);
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (key, value) = match parse_line(line) {
            Ok(Some(pair)) => pair,
            Ok(None) => continue,
            Err((key, message)) => {
                errors.push(error(line_no, key, message.into_owned()));
                continue;
            }
        };
        if let Err(e) = validate_tenant_name(key) {
            errors.push(error(line_no, key, e.to_string()));
            continue;
        }
        let Some(shard) = shards.idx(value) else {
            let known = if shards.is_empty() {
                "no shards are configured".to_string()
            } else {
                format!("known: {}", shards.joined())
            };
            errors.push(error(
                line_no,
                key,
                format!("unknown shard {value:?} ({known})"),
            ));
            continue;
        };
        // Line numbers beyond u32 would need a file of more than 4 GiB.
        let tag = u32::try_from(line_no).unwrap_or(u32::MAX);
        staged.push(key, shard, tag);
    }
    let table = staged.finish(|name, first, dup| {
        errors.push(error(
            dup as usize,
            name,
            format!("duplicate tenant (first defined on line {first})"),
        ));
    });
    if errors.is_empty() {
        Ok(table)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// A line's error: the key as far as it was read (may be empty) and the message.
type LineError<'a> = (&'a str, Cow<'static, str>);

/// Parses one line (without its line break): `Ok(None)` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<(&str, &str)>, LineError<'_>> {
    let rest = line.trim_start_matches([' ', '\t']);
    let Some(&first) = rest.as_bytes().first() else {
        return Ok(None);
    };
    let (key, rest) = match first {
        b'#' => return Ok(None),
        b'[' => {
            return Err((
                "",
                "tables are not allowed in a tenant map; expected `tenant = \"shard\"`".into(),
            ));
        }
        b'"' | b'\'' => quoted(rest).map_err(|m| ("", m))?,
        _ => {
            // Take everything up to the separator and let the tenant name check
            // explain any bad character, which reads better than "expected '='".
            let end = rest
                .bytes()
                .position(|b| matches!(b, b' ' | b'\t' | b'=' | b'.' | b'#'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(("", "expected `tenant = \"shard\"`".into()));
            }
            rest.split_at(end)
        }
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = match rest.as_bytes().first() {
        Some(b'=') => rest[1..].trim_start_matches([' ', '\t']),
        Some(b'.') => return Err((key, "dotted keys are not allowed in a tenant map".into())),
        Some(_) | None => return Err((key, "expected '=' after the tenant name".into())),
    };
    let (value, rest) = match rest.as_bytes().first() {
        Some(b'"' | b'\'') => quoted(rest).map_err(|m| (key, m))?,
        _ => {
            return Err((
                key,
                "expected the shard name as a quoted string, like \"s1\"".into(),
            ));
        }
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err((key, "unexpected text after the shard name".into()));
    }
    Ok(Some((key, value)))
}

/// Reads a TOML basic ("...") or literal ('...') string without escapes from the
/// start of `s`; returns its contents and the text after the closing quote.
fn quoted(s: &str) -> Result<(&str, &str), Cow<'static, str>> {
    let quote = s.as_bytes()[0];
    if s.as_bytes().get(1..3) == Some(&[quote, quote][..]) {
        return Err("multi-line strings are not allowed in a tenant map".into());
    }
    let body = &s[1..];
    let Some(end) = body.bytes().position(|b| b == quote) else {
        return Err("unterminated string".into());
    };
    let contents = &body[..end];
    if quote == b'"' && contents.contains('\\') {
        return Err("escape sequences are not allowed in a tenant map".into());
    }
    Ok((contents, &body[end + 1..]))
}

/// Writes `table` as a map file: the header comment, then one `name = "shard"` line
/// per tenant in name order. Returns how many tenants were left out because their
/// shard index has no name in `shards` (always 0 when the two belong together).
pub fn write_map<W: Write>(
    mut out: W,
    table: &TenantTable,
    shards: &ShardNames,
) -> io::Result<usize> {
    out.write_all(MAP_HEADER.as_bytes())?;
    let mut skipped = 0;
    let mut line = Vec::with_capacity(128);
    for (name, idx) in table.iter() {
        let Some(shard) = shards.name(idx) else {
            skipped += 1;
            continue;
        };
        // Tenant names are bare-key safe and shard names contain no quotes or
        // backslashes (ShardNames guarantees both), so no quoting or escaping is needed.
        line.clear();
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b" = \"");
        line.extend_from_slice(shard.as_bytes());
        line.extend_from_slice(b"\"\n");
        out.write_all(&line)?;
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::super::ShardIdx;
    use super::*;

    fn shards() -> ShardNames {
        ShardNames::new(["s1", "s2"]).unwrap()
    }

    fn parse(text: &str) -> Result<TenantTable, Vec<MapError>> {
        parse_map(Path::new("tenants.toml"), text, &shards())
    }

    fn errs(text: &str) -> Vec<String> {
        parse(text)
            .expect_err("expected errors")
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn good_file() {
        let text = "\u{feff}# tenants of example.com\n\
                    \n\
                    acme = \"s1\"\n\
                    \tglobex=\"s2\"   # moved in March\r\n\
                    \"initech\" = \"s2\"\n\
                    'umbrella' = 's1'\n\
                    Hooli = \"s1\"\n\
                    under_score = \"s1\"\n\
                    # trailing comment";
        let table = parse(text).unwrap();
        assert_eq!(table.len(), 6);
        assert_eq!(table.get("acme"), Some(ShardIdx(0)));
        assert_eq!(table.get("globex"), Some(ShardIdx(1)));
        assert_eq!(table.get("initech"), Some(ShardIdx(1)));
        assert_eq!(table.get("umbrella"), Some(ShardIdx(0)));
        assert_eq!(table.get("hooli"), Some(ShardIdx(0)));
        assert_eq!(table.get("under_score"), Some(ShardIdx(0)));
    }

    #[test]
    fn empty_file() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn unknown_shard() {
        let text = format!("{}acme = \"s9\"\n", "\n".repeat(13));
        assert_eq!(
            errs(&text),
            ["tenants.toml:14: acme: unknown shard \"s9\" (known: s1, s2)"]
        );
    }

    #[test]
    fn duplicate_names_both_lines() {
        assert_eq!(
            errs("acme = \"s1\"\nglobex = \"s1\"\nACME = \"s2\"\n"),
            ["tenants.toml:3: acme: duplicate tenant (first defined on line 1)"]
        );
    }

    #[test]
    fn invalid_tenant_names() {
        assert_eq!(
            errs("-acme = \"s1\"\n\"a.b\" = \"s1\"\n\"\" = \"s1\"\n"),
            [
                "tenants.toml:1: -acme: tenant name must not start or end with '-'",
                "tenants.toml:2: a.b: tenant name contains '.'; only letters, digits, '-' and '_' are allowed",
                "tenants.toml:3: tenant name is empty",
            ]
        );
        let long = "a".repeat(64);
        assert_eq!(
            errs(&format!("{long} = \"s1\"")),
            [format!(
                "tenants.toml:1: {long}: tenant name is 64 bytes long; at most 63 are allowed"
            )]
        );
    }

    #[test]
    fn syntax_errors_are_not_skipped() {
        let text = "[tenants]\n\
                    acme.x = \"s1\"\n\
                    acme \"s1\"\n\
                    acme = s1\n\
                    acme = 1\n\
                    acme = \"s1\" extra\n\
                    acme = \"s1\n\
                    acme = \"s\\u0031\"\n\
                    acme = \"\"\"s1\"\"\"\n\
                    = \"s1\"\n";
        assert_eq!(
            errs(text),
            [
                "tenants.toml:1: tables are not allowed in a tenant map; expected `tenant = \"shard\"`",
                "tenants.toml:2: acme: dotted keys are not allowed in a tenant map",
                "tenants.toml:3: acme: expected '=' after the tenant name",
                "tenants.toml:4: acme: expected the shard name as a quoted string, like \"s1\"",
                "tenants.toml:5: acme: expected the shard name as a quoted string, like \"s1\"",
                "tenants.toml:6: acme: unexpected text after the shard name",
                "tenants.toml:7: acme: unterminated string",
                "tenants.toml:8: acme: escape sequences are not allowed in a tenant map",
                "tenants.toml:9: acme: multi-line strings are not allowed in a tenant map",
                "tenants.toml:10: expected `tenant = \"shard\"`",
            ]
        );
    }

    #[test]
    fn every_error_is_reported_in_line_order() {
        let text = "a = \"s1\"\nb = \"nope\"\nc = \"s2\"\na = \"s2\"\n-d = \"s1\"\nc = \"s1\"\n";
        let got = parse(text).unwrap_err();
        let lines: Vec<(usize, &str)> = got.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(lines, [(2, "b"), (4, "a"), (5, "-d"), (6, "c")]);
        assert!(got.iter().all(|e| e.file == Path::new("tenants.toml")));
    }

    #[test]
    fn no_shards_configured() {
        let none = ShardNames::default();
        let got = parse_map(Path::new("t.toml"), "acme = \"s1\"", &none).unwrap_err();
        assert_eq!(
            got[0].to_string(),
            "t.toml:1: acme: unknown shard \"s1\" (no shards are configured)"
        );
    }

    #[test]
    fn written_file_parses_back_and_is_valid_toml() {
        let table = parse("zeta = \"s2\"\nacme = \"s1\"\nmid-dle = \"s2\"\n").unwrap();
        let mut out = Vec::new();
        assert_eq!(write_map(&mut out, &table, &shards()).unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(MAP_HEADER));
        assert!(text.ends_with("acme = \"s1\"\nmid-dle = \"s2\"\nzeta = \"s2\"\n"));
        let again = parse(&text).unwrap();
        assert_eq!(
            again.iter().collect::<Vec<_>>(),
            table.iter().collect::<Vec<_>>()
        );
        let as_toml: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(as_toml.len(), 3);
        assert_eq!(as_toml["mid-dle"].as_str(), Some("s2"));
    }
}
