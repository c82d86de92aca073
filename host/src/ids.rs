//! Identifiers: lower-case hex for digests, and random ids (request,
//! trace and span ids, host ids) from one generator.
//!
//! The generator is `rand`'s thread-local ChaCha, seeded from the OS and
//! reseeded periodically: request ids must not be guessable from earlier
//! ones, and it costs a few nanoseconds a call. Bottom layer: calls
//! nothing in the crate.

use rand::RngCore as _;
use std::fmt::Write as _;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A random, non-zero `u64` (W3C trace ids and span ids must not be zero).
pub fn random_u64() -> u64 {
    rand::thread_rng().next_u64() | 1
}

/// `bits` (a multiple of 64) random bits as lower-case hex.
pub fn random_hex(bits: usize) -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(bits / 4);
    for _ in 0..bits.div_ceil(64) {
        let _ = write!(s, "{:016x}", rng.next_u64());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_random_ids_have_their_lengths() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        let id = random_hex(128);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(random_hex(128), random_hex(128));
        assert_ne!(random_u64(), 0);
    }
}
