//! SemVer 2.0.0 precedence without allocating, for the `semver_*` operators.
//!
//! The `semver` crate allocates for long pre-release tags, and evaluation must not allocate,
//! so versions are parsed as borrowed slices here. The crate is the test oracle.

use core::cmp::Ordering;

/// A parsed `MAJOR.MINOR.PATCH[-PRE][+BUILD]`, borrowing its pre-release part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version<'a> {
    core: [u64; 3],
    /// Empty when there is no pre-release; build metadata is dropped (it has no precedence).
    pre: &'a str,
}

impl<'a> Version<'a> {
    /// Parses a strict SemVer 2.0.0 version: no `v` prefix, no leading zeros, no blanks.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        let (rest, build) = match text.split_once('+') {
            Some((rest, build)) => (rest, Some(build)),
            None => (text, None),
        };
        if let Some(build) = build
            && !build.split('.').all(|id| !id.is_empty() && id.bytes().all(is_ident_byte))
        {
            return None;
        }
        let (core, pre) = rest.split_once('-').unwrap_or((rest, ""));
        if rest.contains('-') && !pre.split('.').all(valid_pre_identifier) {
            return None;
        }
        let mut parts = core.split('.');
        let mut numbers = [0u64; 3];
        for number in &mut numbers {
            *number = parse_numeric(parts.next()?)?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Self { core: numbers, pre })
    }

    pub(crate) fn from_parts(core: [u64; 3], pre: &'a str) -> Self {
        Self { core, pre }
    }

    pub(crate) fn core(&self) -> [u64; 3] {
        self.core
    }

    pub(crate) fn pre(&self) -> &'a str {
        self.pre
    }

    /// SemVer precedence: build metadata is ignored, a pre-release sorts before its release.
    pub(crate) fn precedence(&self, other: &Self) -> Ordering {
        self.core.cmp(&other.core).then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => compare_pre(self.pre, other.pre),
        })
    }
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (parse_numeric(x), parse_numeric(y)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn valid_pre_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.bytes().all(is_ident_byte)
        && (!id.bytes().all(|b| b.is_ascii_digit()) || parse_numeric(id).is_some())
}

/// A numeric identifier: digits without a leading zero, fitting in u64.
fn parse_numeric(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.is_empty()
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes[0] == b'0')
    {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn precedence_examples_from_the_spec() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (Version::parse(pair[0]).unwrap(), Version::parse(pair[1]).unwrap());
            assert_eq!(a.precedence(&b), Ordering::Less, "{} < {}", pair[0], pair[1]);
        }
        let (a, b) = (Version::parse("1.0.0+a").unwrap(), Version::parse("1.0.0+b").unwrap());
        assert_eq!(a.precedence(&b), Ordering::Equal);
    }

    #[test]
    fn rejects_what_the_spec_rejects() {
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "v1.2.3",
            "01.2.3",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3+",
            "1.2.3-a..b",
            " 1.2.3",
            "1.2.3-é",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
            assert!(semver::Version::parse(bad).is_err(), "oracle accepts {bad:?}");
        }
    }

    fn version() -> impl Strategy<Value = String> {
        let number = prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,3}"];
        let ident = prop_oneof![number.clone(), "[0-9A-Za-z-]{1,6}"];
        (number.clone(), number.clone(), number, proptest::collection::vec(ident, 0..3)).prop_map(
            |(a, b, c, pre)| {
                let mut v = format!("{a}.{b}.{c}");
                if !pre.is_empty() {
                    v.push('-');
                    v.push_str(&pre.join("."));
                }
                v
            },
        )
    }

    proptest! {
        #[test]
        fn agrees_with_the_semver_crate(a in version(), b in version()) {
            let oracle = (semver::Version::parse(&a), semver::Version::parse(&b));
            let ours = (Version::parse(&a), Version::parse(&b));
            prop_assert_eq!(oracle.0.is_ok(), ours.0.is_some(), "{}", a);
            prop_assert_eq!(oracle.1.is_ok(), ours.1.is_some(), "{}", b);
            if let ((Ok(x), Ok(y)), (Some(p), Some(q))) = (oracle, ours) {
                prop_assert_eq!(x.cmp_precedence(&y), p.precedence(&q));
            }
        }
    }
}
