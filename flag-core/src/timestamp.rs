//! RFC 3339 timestamps to Unix milliseconds, for the `before` and `after` operators.
//!
//! Context attributes are parsed on every evaluation, which must not allocate and must stay
//! no_std, so this is a small strict parser; chrono is its test oracle.

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into milliseconds since the Unix epoch.
/// Digits beyond milliseconds are truncated. A leap second (`:60`) counts as `:59.999`.
pub(crate) fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }

    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let count = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        for (i, &digit) in fraction[..count.min(3)].iter().enumerate() {
            millis += i64::from(digit - b'0') * [100, 10, 1][i];
        }
        rest = &fraction[count..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    if second == 60 {
        millis = 999;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_millis("2026-11-22T10:00:00.5+01:00"), Some(1_795_338_000_500));
        assert_eq!(parse_rfc3339_millis("1969-12-31T23:59:59.999Z"), Some(-1));
        assert_eq!(parse_rfc3339_millis("2024-02-29t12:00:00.123456z"), Some(1_709_208_000_123));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T10:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+1:00",
            "2026-11-22T10:00:00+01:00 ",
            "+026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.5é",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(
            y in 0i64..=9999, mo in 1i64..=12, d in 1i64..=31, h in 0i64..=23, mi in 0i64..=59,
            s in 0i64..=59, frac in proptest::option::of("[0-9]{1,9}"),
            off in proptest::option::of((any::<bool>(), 0i64..=23, 0i64..=59)),
        ) {
            let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            if let Some(frac) = frac { text.push('.'); text.push_str(&frac); }
            match off {
                None => text.push('Z'),
                Some((neg, oh, om)) => text.push_str(&format!("{}{oh:02}:{om:02}", if neg { '-' } else { '+' })),
            }
            let oracle = chrono::DateTime::parse_from_rfc3339(&text).ok().map(|t| t.timestamp_millis());
            prop_assert_eq!(parse_rfc3339_millis(&text), oracle, "{}", text);
        }
    }
}
