//! A check serde_json does not make: an object that names a key twice. serde_json keeps the
//! last value, so `{"on": true, "on": false}` would silently become `{"on": false}`, and a
//! feature that can never turn on. Snapshots are checked before they are read, and any JSON can
//! be checked with [`unique_keys`].

use alloc::collections::BTreeSet;
use alloc::string::String;
use core::cell::RefCell;
use core::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{ConfigError, Path, Problem, at};

/// Refuses JSON in which an object names a key twice; the error's path is the second
/// occurrence's (`flags[0].variants.on`). JSON that is malformed in other ways passes: reading
/// it reports that, with its own path.
pub fn unique_keys(json: &[u8]) -> Result<(), ConfigError> {
    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let checked = Unique { path: &Path::Root, found: &found }.deserialize(&mut deserializer);
    match (checked, found.into_inner()) {
        (Err(_), Some(duplicate)) => Err(duplicate),
        _ => Ok(()),
    }
}

/// Walks one JSON value at `path`, noting the first key named twice in `found`.
struct Unique<'a> {
    path: &'a Path<'a>,
    found: &'a RefCell<Option<ConfigError>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let path = self.path.index(index);
            if items.next_element_seed(Unique { path: &path, found: self.found })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut keys = BTreeSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if keys.contains(&key) {
                let duplicate = at(self.path.field(&key), Problem::DuplicateKey(key.clone()));
                *self.found.borrow_mut() = Some(duplicate);
                // Any error stops the walk; `found` says which.
                entries.next_value::<IgnoredAny>()?;
                return Err(de::Error::custom("duplicate key"));
            }
            let path = self.path.field(&key);
            entries.next_value_seed(Unique { path: &path, found: self.found })?;
            keys.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_named_twice_is_refused_with_its_path_anywhere() {
        assert_eq!(unique_keys(br#"{"a": 1, "b": {"c": [1, {"d": 2}]}}"#), Ok(()));
        let error =
            unique_keys(br#"{"flags": [{"variants": {"on": true, "on": false}}]}"#).unwrap_err();
        assert_eq!(error.path, "flags[0].variants.on");
        assert_eq!(error.problem, Problem::DuplicateKey("on".into()));
        let nested = unique_keys(br#"[0, {"x": {"y": 1, "y": 2}}]"#).unwrap_err();
        assert_eq!(nested.path, "[1].x.y");
        let escaped = unique_keys(br#"{"k": 1, "\u006b": 2}"#).unwrap_err();
        assert_eq!(escaped.path, "k", "an escaped spelling is the same key");
        assert_eq!(unique_keys(b"{not json"), Ok(()), "other faults are the parser's to report");
    }
}
