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
