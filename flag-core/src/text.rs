//! String equality for the short strings evaluation compares all the time: attribute names,
//! `in` values, flag keys. Slice `==` calls libc's memcmp, whose call overhead dominates at these
//! lengths; overlapping word loads do not.

/// Whether `a == b`, inlined for strings of up to 16 bytes.
#[inline]
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => word32(a, 0) == word32(b, 0) && word32(a, n - 4) == word32(b, n - 4),
        8..=16 => word64(a, 0) == word64(b, 0) && word64(a, n - 8) == word64(b, n - 8),
        _ => a == b,
    }
}

#[inline]
fn word32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[inline]
fn word64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_eq(a in ".{0,24}", b in ".{0,24}") {
            prop_assert_eq!(same(&a, &b), a == b);
            prop_assert!(same(&a, &a));
        }

        #[test]
        fn finds_a_single_differing_byte(s in "[a-z]{1,40}", at in any::<prop::sample::Index>()) {
            let mut bytes = s.clone().into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = b'A';
            prop_assert!(!same(&s, core::str::from_utf8(&bytes).unwrap()));
        }
    }
}
