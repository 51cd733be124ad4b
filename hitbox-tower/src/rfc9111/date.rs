//! HTTP-date (RFC 9110 section 5.6.7): the preferred IMF-fixdate and the two
//! obsolete forms a recipient must still accept, as seconds since the epoch.
//!
//! The parser is this crate's own rather than the `httpdate` crate's: run
//! against the cases below, `httpdate` 1.0.3 refuses a lower-case `gmt`
//! (which this cache tolerates) and a weekday that disagrees with the date,
//! and it works in `SystemTime` where the cache's clock is seconds.

const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const LONG_DAYS: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];

/// Parses an HTTP-date in exactly one of the three forms of RFC 9110
/// section 5.6.7, as seconds since the epoch:
///
/// - IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`,
/// - RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT`,
/// - asctime `Sun Nov  6 08:49:37 1994`.
///
/// The grammar is followed byte for byte: two-digit days and hours, one
/// space where one is written (two before a one-digit asctime day), day and
/// month names as the RFC spells them (they are case-sensitive). The one
/// leniency is a lower-case `gmt`, which some servers send and which cannot
/// be misread. Anything else (`0`, `-1`, a one-digit hour, a double space,
/// dashes in an IMF-fixdate) is `None`, which callers treat as a time in
/// the past where the RFC says so (an invalid `Expires` means stale). The
/// weekday must be a day name; whether it agrees with the date is not
/// checked.
///
/// ```
/// use hitbox_tower::rfc9111::date::parse_http_date;
///
/// assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
/// assert_eq!(parse_http_date("Sun, 06 Nov 1994 8:49:37 GMT"), None);
/// ```
pub fn parse_http_date(value: &str) -> Option<u64> {
    let bytes = value.trim_matches([' ', '\t']).as_bytes();
    let (day, month, year, (hour, minute, second)) = if bytes.len() == 29 && bytes[3] == b',' {
        imf_fixdate(bytes)?
    } else if bytes.len() == 24 && bytes[3] == b' ' {
        asctime(bytes)?
    } else {
        rfc850(bytes)?
    };
    if hour > 23 || minute > 59 || second > 60 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if year < 1970 {
        return Some(0);
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Day, month, year, and the time of day.
type Parts = (u64, u64, u64, (u64, u64, u64));

/// `Sun, 06 Nov 1994 08:49:37 GMT` (29 bytes).
fn imf_fixdate(b: &[u8]) -> Option<Parts> {
    if !DAYS.contains(&&b[..3]) || &b[3..5] != b", " || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    let day = digits(&b[5..7])?;
    let month = month_of(&b[8..11])?;
    let year = digits(&b[12..16])?;
    let time = clock(&b[17..25])?;
    gmt(&b[25..])?;
    Some((day, month, year, time))
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`.
fn rfc850(b: &[u8]) -> Option<Parts> {
    let comma = b.iter().position(|&c| c == b',')?;
    let (name, rest) = (&b[..comma], &b[comma..]);
    if !LONG_DAYS.contains(&name) || rest.len() != 24 {
        return None;
    }
    if &rest[..2] != b", " || rest[4] != b'-' || rest[8] != b'-' || rest[11] != b' ' {
        return None;
    }
    let day = digits(&rest[2..4])?;
    let month = month_of(&rest[5..8])?;
    let short = digits(&rest[9..11])?;
    let time = clock(&rest[12..20])?;
    gmt(&rest[20..])?;
    // Two-digit years more than 50 years ahead are in the past (RFC 9110
    // section 5.6.7); 70 is the usual pivot.
    let year = if short < 70 { 2000 + short } else { 1900 + short };
    Some((day, month, year, time))
}

/// `Sun Nov  6 08:49:37 1994` (24 bytes).
fn asctime(b: &[u8]) -> Option<Parts> {
    if !DAYS.contains(&&b[..3]) || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    let month = month_of(&b[4..7])?;
    let day = match b[8] {
        b' ' => digits(&b[9..10])?,
        _ => digits(&b[8..10])?,
    };
    let time = clock(&b[11..19])?;
    let year = digits(&b[20..24])?;
    Some((day, month, year, time))
}

/// ` GMT`, or ` gmt`.
fn gmt(b: &[u8]) -> Option<()> {
    (b == b" GMT" || b == b" gmt").then_some(())
}

/// `HH:MM:SS`, two digits each.
fn clock(b: &[u8]) -> Option<(u64, u64, u64)> {
    if b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((digits(&b[..2])?, digits(&b[3..5])?, digits(&b[6..8])?))
}

/// A short run of ASCII digits (four at most: no overflow).
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn month_of(name: &[u8]) -> Option<u64> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as u64 + 1)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats seconds since the epoch as an IMF-fixdate.
pub fn format_http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year >= 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_of_rfc_9110_parse_to_the_same_instant() {
        let expected = Some(784_111_777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
        // A lower-case `gmt` is the one leniency.
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 gmt"), expected);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 gmt"), expected);
        assert_eq!(
            parse_http_date("Wed Nov 16 08:49:37 1994"),
            Some(784_111_777 + 10 * 86_400)
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
    }

    #[test]
    fn invalid_dates_are_none() {
        for bad in [
            "0",
            "-1",
            "",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            // Double spaces, dashes in an IMF-fixdate, one-digit fields.
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994  08:49:37 GMT",
            "Sun, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            // Other zones, and names not spelt as the RFC spells them.
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 6-Nov-94 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun Nov  6 08:49:37 94",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT trailing",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{e9}",
            "\u{e9}\u{e9}, 06 Nov 1994 08:49:37 GMT",
            "Sunday,\u{e9}06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for secs in [0, 784_111_777, 1_704_067_200, 4_102_444_800] {
            assert_eq!(parse_http_date(&format_http_date(secs)), Some(secs));
        }
        assert_eq!(format_http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
