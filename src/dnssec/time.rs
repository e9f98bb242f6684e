//! BIND's key timing format, `YYYYMMDDHHMMSS` in UTC, to and from unix seconds.
//! Civil-date arithmetic from Howard Hinnant's `days_from_civil` / `civil_from_days`,
//! so no date crate is needed for one format.

/// `YYYYMMDDHHMMSS` (UTC) as unix seconds; `None` when malformed or outside 1970..2106
/// (a DNSSEC timestamp is a u32).
pub fn parse_timestamp(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    if bytes.len() != 14 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (hour, minute, second) = (field(8..10)?, field(10..12)?, field(12..14)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u32::try_from(seconds).ok()
}

/// Unix seconds as `YYYYMMDDHHMMSS` (UTC).
pub fn format_timestamp(unix: u32) -> String {
    let (year, month, day, hour, minute, second) = civil(unix);
    format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}")
}

/// Unix seconds as C's `ctime` would print them in UTC (`Tue Dec  1 19:16:19 2026`),
/// which BIND puts after each timestamp in a `.key` file's comments.
pub fn format_ctime(unix: u32) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, hour, minute, second) = civil(unix);
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[(unix / 86_400 % 7) as usize];
    let month_name = MONTHS[(month - 1) as usize % 12];
    format!("{weekday} {month_name} {day:2} {hour:02}:{minute:02}:{second:02} {year}")
}

fn civil(unix: u32) -> (i64, i64, i64, i64, i64, i64) {
    let unix = i64::from(unix);
    let (days, rest) = (unix / 86_400, unix % 86_400);
    let (year, month, day) = civil_from_days(days);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(parse_timestamp("19700101000000"), Some(0));
        assert_eq!(parse_timestamp("20261201191619"), Some(1_796_152_579));
        assert_eq!(format_timestamp(1_796_152_579), "20261201191619");
        assert_eq!(format_ctime(1_796_152_579), "Tue Dec  1 19:16:19 2026");
        assert_eq!(
            parse_timestamp("20240229120000")
                .map(format_timestamp)
                .as_deref(),
            Some("20240229120000")
        );
        assert_eq!(parse_timestamp("21060207062815"), Some(u32::MAX));
        for unix in [0, 951_782_400, 1_700_000_000, u32::MAX] {
            assert_eq!(parse_timestamp(&format_timestamp(unix)), Some(unix));
        }
    }

    #[test]
    fn bad_timestamps_are_rejected() {
        for text in [
            "2026120119161",
            "202612011916190",
            "20261301000000",
            "20230229000000",
            "20261201240000",
            "1969123123595x",
            "19691231235959",
            "21060207062816",
            "+0261201191619",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }
}
