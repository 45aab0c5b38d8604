//! Moments, as stored and served.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// A moment in UTC, to the millisecond: what every record's time is. Written as RFC 3339 with
/// milliseconds (`2026-11-22T10:00:00.000Z`); compared as a time, never as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// `at`, to the millisecond.
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        let millis = at.timestamp_millis();
        Self(DateTime::from_timestamp_millis(millis).unwrap_or(at))
    }

    /// Any RFC 3339 time, whatever its offset.
    pub fn parse(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text).ok().map(|at| Self::from_datetime(at.to_utc()))
    }

    pub fn datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// The minute since the epoch: how metric counts are keyed.
    pub fn minute(self) -> i64 {
        self.0.timestamp().div_euclid(60)
    }

    /// The start of `minute` (as `minute` numbers them).
    pub fn from_minute(minute: i64) -> Self {
        let at = DateTime::from_timestamp(minute.saturating_mul(60), 0);
        Self(at.unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn plus_seconds(self, seconds: u64) -> Self {
        let delta = TimeDelta::try_seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
            .unwrap_or(TimeDelta::MAX);
        Self(self.0.checked_add_signed(delta).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an RFC 3339 timestamp"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_milliseconds_in_utc_and_order_as_times() {
        let at = Timestamp::parse("2026-11-22T11:00:00.123456+01:00").unwrap();
        assert_eq!(at.to_string(), "2026-11-22T10:00:00.123Z");
        assert_eq!(serde_json::to_string(&at).unwrap(), "\"2026-11-22T10:00:00.123Z\"");
        let back: Timestamp = serde_json::from_str("\"2026-11-22T10:00:00.123Z\"").unwrap();
        assert_eq!(back, at);
        // As text, 09:30 would come before 10:00; as times, 09:30-01:00 is 10:30 UTC.
        let ten = Timestamp::parse("2026-11-22T10:00:00+00:00").unwrap();
        assert!(Timestamp::parse("2026-11-22T09:30:00-01:00").unwrap() > ten);
        assert_eq!(at.plus_seconds(60).minute(), at.minute() + 1);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
