//! A compact set of strings with O(1) lookup, each key numbered in insertion order.
//!
//! Segments hold up to 100,000 keys in each list and snapshots may hold 10,000 flags, so keys
//! live back to back in one arena string instead of one allocation each, located by 32-bit
//! offsets: a key costs its bytes plus about 9 bytes, and a segment list deserializes without an
//! allocation per key. The price is a limit of 4 GiB of keys per set.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::same;

/// Sets up to this size are searched linearly.
const LINEAR_SEARCH_MAX: usize = 8;

/// A set of distinct strings, numbered 0, 1, 2, … in the order they were first inserted.
#[derive(Clone, Default)]
pub struct KeySet {
    arena: String,
    /// `ends[i]` is where key `i` ends in `arena`; it starts where key `i - 1` ends.
    ends: Vec<u32>,
    /// Key numbers, hashed by their text.
    table: HashTable<u32>,
    // Fixed seed: lookups must be reproducible, and no one but the snapshot's author inserts.
    hasher: FixedState,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` unless present. Returns its number and whether it was new, or `None` (and
    /// leaves the set as it was) if the keys would exceed 4 GiB in total.
    pub fn insert(&mut self, key: &str) -> Option<(usize, bool)> {
        let hash = self.hasher.hash_one(key);
        let Self { arena, ends, table, hasher } = self;
        if let Some(&index) = table.find(hash, |&i| same(key_at(arena, ends, i as usize), key)) {
            return Some((index as usize, false));
        }
        let index = u32::try_from(ends.len()).ok()?;
        let end = u32::try_from(arena.len() + key.len()).ok()?;
        arena.push_str(key);
        ends.push(end);
        table.insert_unique(hash, index, |&i| hasher.hash_one(key_at(arena, ends, i as usize)));
        Some((index as usize, true))
    }

    /// The number of `key`, if present.
    #[inline]
    pub fn get(&self, key: &str) -> Option<usize> {
        // Comparing a few short strings beats hashing one: `in` lists are usually tiny.
        if self.len() <= LINEAR_SEARCH_MAX {
            return (0..self.len()).find(|&i| same(self.key(i), key));
        }
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |&i| same(self.key(i as usize), key)).map(|&i| i as usize)
    }

    /// Whether `key` is present.
    #[inline]
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The key numbered `index`. Panics if there is no such key.
    #[inline]
    pub fn key(&self, index: usize) -> &str {
        key_at(&self.arena, &self.ends, index)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Gives back memory reserved for growth.
    pub fn shrink_to_fit(&mut self) {
        let Self { arena, ends, table, hasher } = self;
        arena.shrink_to_fit();
        ends.shrink_to_fit();
        table.shrink_to_fit(|&i| hasher.hash_one(key_at(arena, ends, i as usize)));
    }

    /// The keys in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.key(i))
    }
}

/// Key `index` of the set made of `arena` and `ends`: for closures that borrow the set in parts.
#[inline]
fn key_at<'a>(arena: &'a str, ends: &[u32], index: usize) -> &'a str {
    let start = if index == 0 { 0 } else { ends[index - 1] as usize };
    &arena[start..ends[index] as usize]
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for KeySet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for KeySet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(KeySetVisitor)
    }
}

struct KeySetVisitor;

impl<'de> Visitor<'de> for KeySetVisitor {
    type Value = KeySet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeySet, A::Error> {
        let mut set = KeySet::new();
        while seq.next_element_seed(InsertInto(&mut set))?.is_some() {}
        set.shrink_to_fit();
        Ok(set)
    }
}

/// Deserializes one string straight into the set, without allocating it on its own.
struct InsertInto<'s>(&'s mut KeySet);

impl<'de> DeserializeSeed<'de> for InsertInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for InsertInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        match self.0.insert(key) {
            Some(_) => Ok(()),
            None => Err(E::custom("more than 4 GiB of keys in one list")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keys_in_insertion_order_and_ignores_repeats() {
        let mut set = KeySet::new();
        assert_eq!(set.insert("b"), Some((0, true)));
        assert_eq!(set.insert("a"), Some((1, true)));
        assert_eq!(set.insert("b"), Some((0, false)));
        assert_eq!(set.insert(""), Some((2, true)));
        assert_eq!(set.get("a"), Some(1));
        assert_eq!(set.get(""), Some(2));
        assert_eq!(set.get("c"), None);
        assert_eq!(set.iter().collect::<Vec<_>>(), ["b", "a", ""]);
    }

    #[test]
    fn round_trips_through_json_with_escapes() {
        let set: KeySet = serde_json::from_str(r#"["x", "a\"b", "\u00e9", "x"]"#).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.contains("a\"b") && set.contains("é"));
        assert_eq!(serde_json::to_string(&set).unwrap(), r#"["x","a\"b","é"]"#);
    }

    #[test]
    fn rejects_non_strings() {
        assert!(serde_json::from_str::<KeySet>("[1]").is_err());
        assert!(serde_json::from_str::<KeySet>(r#"{"a": 1}"#).is_err());
    }
}
