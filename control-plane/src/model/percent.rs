//! Exposure as people write it: a percentage from 0 to 100 with at most three decimals (`25`,
//! `2.5`, `"25%"`), held as the snapshot format's thousandths of a percent. The API speaks
//! percentages; only snapshots and the rules inside a flag's state keep thousandths.

use std::fmt;

use flag_core::bucketing::BUCKETS;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A share of units, in thousandths of a percent (25% is 25000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

impl Percent {
    pub const ALL: Self = Self(BUCKETS);

    /// From thousandths of a percent, as snapshots hold it.
    pub fn from_thousandths(thousandths: u32) -> Option<Self> {
        (thousandths <= BUCKETS).then_some(Self(thousandths))
    }

    pub fn thousandths(self) -> u32 {
        self.0
    }

    /// `25`, `2.5`, `25%` or `2.5 %`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let number = text.trim().strip_suffix('%').unwrap_or(text.trim()).trim();
        match number.parse::<f64>() {
            Ok(value) if number.chars().all(|c| c.is_ascii_digit() || c == '.') => {
                Self::from_percentage(value)
            }
            _ => Err(format!("`{text}` is not a percentage from 0 to 100, e.g. 25% or 2.5%")),
        }
    }

    pub fn from_percentage(value: f64) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&value) {
            let hint = if value > 100.0 && value <= f64::from(BUCKETS) && value.fract() == 0.0 {
                format!(
                    " (if {value} was meant in thousandths of a percent, write {})",
                    value / 1000.0
                )
            } else {
                String::new()
            };
            return Err(format!("{value} is not a percentage from 0 to 100{hint}"));
        }
        let thousandths = (value * 1000.0).round();
        if (thousandths - value * 1000.0).abs() > 1e-6 {
            return Err(format!("{value}%: at most three decimals (thousandths of a percent)"));
        }
        Ok(Self(thousandths as u32))
    }
}

impl fmt::Display for Percent {
    /// `25%`, `2.5%`, `0.001%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, thousandths) = (self.0 / 1000, self.0 % 1000);
        if thousandths == 0 {
            return write!(f, "{whole}%");
        }
        let decimals = format!("{thousandths:03}");
        write!(f, "{whole}.{}%", decimals.trim_end_matches('0'))
    }
}

impl Serialize for Percent {
    /// A number of percent: `25`, or `2.5`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            serializer.serialize_u32(self.0 / 1000)
        } else {
            serializer.serialize_f64(f64::from(self.0) / 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PercentVisitor;
        impl Visitor<'_> for PercentVisitor {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage from 0 to 100, e.g. 25, 2.5 or \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Percent, E> {
                Percent::from_percentage(value as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Percent, E> {
                Percent::from_percentage(value as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Percent, E> {
                Percent::from_percentage(value).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Percent, E> {
                Percent::parse(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(PercentVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_write_percentages() {
        for (text, thousandths) in
            [("25%", 25_000), ("25", 25_000), ("2.5%", 2_500), ("100", 100_000), ("0.001%", 1)]
        {
            assert_eq!(Percent::parse(text), Ok(Percent(thousandths)), "{text}");
        }
        for bad in ["", "%", "-1", "101%", "1e2", "0.0001", "abc", "NaN", "inf"] {
            assert!(Percent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_takes_numbers_and_strings_and_writes_numbers() {
        let parsed: Vec<Percent> = serde_json::from_str(r#"[50, 2.5, "5%", 0]"#).unwrap();
        assert_eq!(parsed, [Percent(50_000), Percent(2_500), Percent(5_000), Percent(0)]);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), "[50,2.5,5,0]");
        let error = serde_json::from_str::<Percent>("50000").unwrap_err().to_string();
        assert!(error.contains("0 to 100") && error.contains("write 50"), "{error}");
        assert!(serde_json::from_str::<Percent>("-5").is_err());
    }

    #[test]
    fn shown_with_no_trailing_zeros() {
        let shown: Vec<String> =
            [25_000, 2_500, 1, 100_000, 0].map(|t| Percent(t).to_string()).into();
        assert_eq!(shown, ["25%", "2.5%", "0.001%", "100%", "0%"]);
    }
}
