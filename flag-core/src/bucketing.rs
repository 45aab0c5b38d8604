//! rg1, the bucketing algorithm: a frozen public contract (docs/snapshot-format.md).
//!
//! `bucket = (murmur3_x86_32(salt + ":" + unit_key, seed 0) as u64 * 100000) >> 32`, and a unit
//! is inside exposure `p` iff `bucket < p`. Changing any of this moves users between cohorts.

/// Buckets run over `0..BUCKETS`; percentages are in thousandths of a percent.
pub const BUCKETS: u32 = 100_000;

/// The rg1 bucket of `unit_key` under `salt`, in `0..BUCKETS`.
pub fn bucket(salt: &str, unit_key: &str) -> u32 {
    let mut hasher = Murmur3::new(0);
    hasher.write(salt.as_bytes());
    hasher.write(b":");
    hasher.write(unit_key.as_bytes());
    bucket_of_hash(hasher.finish())
}

/// Scales a 32-bit hash onto `0..BUCKETS` without modulo bias towards low buckets.
#[inline]
pub fn bucket_of_hash(hash: u32) -> u32 {
    ((u64::from(hash) * u64::from(BUCKETS)) >> 32) as u32
}

/// Unleash's seed for choosing a variant (`VARIANT_NORMALIZATION_SEED` in Unleash's engines);
/// its flexible rollout hashes with seed 0.
pub const UNLEASH_VARIANT_SEED: u32 = 86_028_157;

/// Unleash's normalized hash: `murmur3_x86_32("{group}:{identifier}", seed) % modulus + 1`, in
/// `1..=modulus`. A flexible rollout of `r` percent takes the units whose hash with seed 0 and
/// modulus 100 is at most `r`; variants take the first whose running weight reaches the hash
/// with `UNLEASH_VARIANT_SEED` and the weights' total as the modulus. `modulus` is above 0.
pub fn unleash_normalized(group: &str, identifier: &str, modulus: u32, seed: u32) -> u32 {
    let mut hasher = Murmur3::new(seed);
    hasher.write(group.as_bytes());
    hasher.write(b":");
    hasher.write(identifier.as_bytes());
    hasher.finish() % modulus.max(1) + 1
}

/// flagd's `fractional` bucket as flagd computes it since its "fractional bucketing
/// improvements" (2026): `(murmur3_x86_32(key, 0) × total) >> 32`, in `0..total`, where `key`
/// is the `bucketBy` value's UTF-8 (by default the flag key followed by the targeting key, with
/// nothing between) and `total` the weights' sum. A unit gets the first variant whose running
/// weight exceeds its bucket. (Earlier flagd took `|int32(hash)| / MaxInt32` as a percentage.)
pub fn flagd_bucket(key: &[u8], total: u32) -> u32 {
    ((u64::from(murmur3_x86_32(key, 0)) * u64::from(total)) >> 32) as u32
}

/// MurmurHash3, x86 32-bit variant, over a byte slice.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    let mut hasher = Murmur3::new(seed);
    hasher.write(data);
    hasher.finish()
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Streaming MurmurHash3 x86_32: the hash of the concatenation of everything written.
///
/// Rollouts hash `salt:` once at compile time and copy that state for each unit key.
#[derive(Debug, Clone, Copy)]
pub struct Murmur3 {
    h1: u32,
    /// Bytes not yet forming a whole 4-byte block, little-endian in the low bits.
    tail: u32,
    tail_len: usize,
    total_len: usize,
}

impl Murmur3 {
    /// A hasher with the given seed.
    pub fn new(seed: u32) -> Self {
        Self { h1: seed, tail: 0, tail_len: 0, total_len: 0 }
    }

    /// Feeds more bytes.
    #[inline]
    pub fn write(&mut self, mut data: &[u8]) {
        self.total_len = self.total_len.wrapping_add(data.len());
        while self.tail_len > 0 && self.tail_len < 4 {
            let Some((&byte, rest)) = data.split_first() else { return };
            self.tail |= u32::from(byte) << (8 * self.tail_len);
            self.tail_len += 1;
            data = rest;
        }
        if self.tail_len == 4 {
            self.h1 = mix_block(self.h1, self.tail);
            self.tail = 0;
            self.tail_len = 0;
        }
        let mut blocks = data.chunks_exact(4);
        for block in &mut blocks {
            let k1 = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
            self.h1 = mix_block(self.h1, k1);
        }
        for (i, &byte) in blocks.remainder().iter().enumerate() {
            self.tail |= u32::from(byte) << (8 * i);
        }
        self.tail_len = blocks.remainder().len();
    }

    /// The hash of everything written so far.
    #[inline]
    pub fn finish(&self) -> u32 {
        let mut h1 = self.h1;
        if self.tail_len > 0 {
            h1 ^= mix_k1(self.tail);
        }
        // The reference truncates the length to 32 bits.
        h1 ^= self.total_len as u32;
        fmix32(h1)
    }
}

#[inline]
fn mix_k1(k1: u32) -> u32 {
    k1.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

#[inline]
fn mix_block(h1: u32, k1: u32) -> u32 {
    (h1 ^ mix_k1(k1)).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_vectors() {
        let vectors: [(&str, u32); 10] = [
            ("hello", 613_153_351),
            ("fractional-flagjack", 2_682_799_072),
            ("fractional-flagqueen", 4_278_517_551),
            ("fractional-flag-shorthandjon@company.com", 618_039_204),
            ("ejOoVL", 0),
            ("SI7p-", 0x7fff_ffff),
            ("6LvT0", 0x8000_0000),
            ("ceQdGm", 0xffff_ffff),
            ("", 0),
            ("Hellø", 567_617_844),
        ];
        for (input, expected) in vectors {
            assert_eq!(murmur3_x86_32(input.as_bytes(), 0), expected, "murmur3({input:?})");
        }
    }

    #[test]
    fn rg1_bucket_vectors() {
        assert_eq!(bucket("AB12A", "122"), 24_729);
        assert_eq!(bucket("checkout-v2", "user-1"), 70_650);
        assert_eq!(bucket("checkout-v2", "user-2"), 14_146);
    }

    /// Unleash's own examples: its Node SDK's tests pin `gr1:123` at 73 and `groupX:999` at 25.
    #[test]
    fn unleash_normalized_hash_vectors() {
        assert_eq!(unleash_normalized("gr1", "123", 100, 0), 73);
        assert_eq!(unleash_normalized("groupX", "999", 100, 0), 25);
        for (group, identifier) in [("gr1", "123"), ("checkout", "user-1"), ("", "")] {
            let hash = murmur3_x86_32(alloc::format!("{group}:{identifier}").as_bytes(), 0);
            assert_eq!(unleash_normalized(group, identifier, 100, 0), hash % 100 + 1);
            let hash = murmur3_x86_32(
                alloc::format!("{group}:{identifier}").as_bytes(),
                UNLEASH_VARIANT_SEED,
            );
            assert_eq!(
                unleash_normalized(group, identifier, 1000, UNLEASH_VARIANT_SEED),
                hash % 1000 + 1
            );
        }
        assert_eq!(unleash_normalized("checkout", "user-1", 0, 0), 1, "a zero modulus is one");
    }

    /// flagd's testbed keys whose hashes sit at the edges (0, 2³¹ − 1, 2³¹, 2³² − 1), over 100,
    /// and its `fractional-flag` examples (`jack`, `queen`) over four equal weights.
    #[test]
    fn flagd_bucket_vectors() {
        let edges = [("ejOoVL", 0), ("SI7p-", 49), ("6LvT0", 50), ("ceQdGm", 99)];
        for (key, bucket) in edges {
            assert_eq!(flagd_bucket(key.as_bytes(), 100), bucket, "{key}");
        }
        // 2,682,799,072 × 100 >> 32 = 62, the third of four 25s (`hearts` in flagd's testbed,
        // clubs, diamonds, hearts, spades); 4,278,517,551 gives 99.
        assert_eq!(flagd_bucket(b"fractional-flagjack", 100), 62);
        assert_eq!(flagd_bucket(b"fractional-flagqueen", 100), 99);
        assert_eq!(flagd_bucket(b"anything", 1), 0);
        assert_eq!(flagd_bucket(b"anything", 0), 0);
    }

    #[test]
    fn bucket_bounds() {
        assert_eq!(bucket_of_hash(0), 0);
        assert_eq!(bucket_of_hash(u32::MAX), BUCKETS - 1);
        assert_eq!(bucket_of_hash(0x8000_0000), BUCKETS / 2);
    }

    #[test]
    fn streaming_equals_one_shot_at_every_split() {
        let data = b"fractional-flag-shorthandjon@company.com";
        for a in 0..=data.len() {
            for b in a..=data.len() {
                let mut hasher = Murmur3::new(7);
                hasher.write(&data[..a]);
                hasher.write(&data[a..b]);
                hasher.write(&data[b..]);
                assert_eq!(hasher.finish(), murmur3_x86_32(data, 7), "split at {a}, {b}");
            }
        }
    }
}
