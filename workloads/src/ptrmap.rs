//! Hash maps keyed by pointer identities (and thread ids): a multiplicative hash is enough
//! for such keys and several times cheaper than SipHash, which matters at 10^8 events.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct PtrHasher(u64);

impl Hasher for PtrHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing; the rotation moves the well-mixed high bits down to where
        // hashbrown takes its bucket index, and the low bits into its tag byte.
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }
}

pub type PtrMap<V> = HashMap<u64, V, BuildHasherDefault<PtrHasher>>;
