//! HTTP-date (RFC 9110 section 5.6.7): the preferred IMF-fixdate and the two
//! obsolete forms a recipient must still accept, as seconds since the epoch.
//!
//! Parsing is the `httpdate` crate's. Both it and the parser this crate had
//! before were run against the cases in the tests below; `httpdate` refused
//! everything the other refused, and two more (a lower-case `gmt`, and a
//! weekday that disagrees with the date), so the stricter one is kept.
//! Formatting stays here: it takes any number of seconds (the cache's clock
//! is seconds), where `httpdate` panics past the year 9999.

/// Parses an HTTP-date in exactly one of the three forms of RFC 9110
/// section 5.6.7, as seconds since the epoch:
///
/// - IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`,
/// - RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT`,
/// - asctime `Sun Nov  6 08:49:37 1994`.
///
/// The parsing is the `httpdate` crate's, which follows the grammar byte
/// for byte: two-digit days and hours, one space where one is written (two
/// before a one-digit asctime day), day and month names and `GMT` as the
/// RFC spells them (they are case-sensitive), a weekday that agrees with
/// the date. Anything else (`0`, `-1`, a one-digit hour, a double space,
/// dashes in an IMF-fixdate, `gmt`, a date before 1970 or after 9999) is
/// `None`, which callers treat as a time in the past where the RFC says so
/// (an invalid `Expires` means stale). Surrounding spaces and tabs, which
/// the field syntax allows, are trimmed first.
///
/// ```
/// use hitbox_tower::rfc9111::date::parse_http_date;
///
/// assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
/// assert_eq!(parse_http_date("Sun, 06 Nov 1994 8:49:37 GMT"), None);
/// assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None); // a Sunday
/// ```
pub fn parse_http_date(value: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(value.trim_matches([' ', '\t'])).ok()?;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|elapsed| elapsed.as_secs())
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
        // Spaces and tabs around the value are the field's, not the date's.
        assert_eq!(parse_http_date(" \tSun, 06 Nov 1994 08:49:37 GMT "), expected);
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
            // `GMT` as the RFC spells it; a weekday that agrees with the
            // date; the years the format can say after the epoch.
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sunday, 06-Nov-94 08:49:37 gmt",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Monday, 06-Nov-94 08:49:37 GMT",
            "Mon Nov  6 08:49:37 1994",
            "Thu, 06 Nov 1969 08:49:37 GMT",
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
