//! Identifiers: lower-case hex for digests, and random ids (request,
//! trace and span ids, host ids) from one generator.
//!
//! The generator is `rand`'s thread-local ChaCha, seeded from the OS and
//! reseeded periodically: request ids must not be guessable from earlier
//! ones, and it costs a few nanoseconds a call. Bottom layer: calls
//! nothing in the crate.

use rand::RngCore as _;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push_str(std::str::from_utf8(&hex_byte(b)).expect("hex digits are ASCII"));
    }
    s
}

/// `n` as 16 lower-case hex digits. By table into a stack buffer, not
/// `format!` or a `push` per digit: ids are made and written on every
/// request, where both showed in profiles.
fn hex64_digits(n: u64) -> [u8; 16] {
    let mut out = [0; 16];
    for (pair, byte) in out.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair.copy_from_slice(&hex_byte(byte));
    }
    out
}

/// `byte` as two lower-case hex digits.
pub fn hex_byte(byte: u8) -> [u8; 2] {
    [
        DIGITS[usize::from(byte >> 4)],
        DIGITS[usize::from(byte & 0xf)],
    ]
}

/// Appends `n` as 16 lower-case hex digits.
pub fn push_hex64(s: &mut String, n: u64) {
    let digits = hex64_digits(n);
    s.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
}

/// `words` random `u64`s (at most 2) as lower-case hex, straight into
/// the shared string a request's ids live in: one allocation.
pub fn random_hex_arc(words: usize) -> std::sync::Arc<str> {
    assert!(words <= 2, "ids are 64 or 128 bits");
    let mut rng = rand::thread_rng();
    let mut digits = [0; 32];
    for word in digits.chunks_exact_mut(16).take(words) {
        word.copy_from_slice(&hex64_digits(rng.next_u64() | 1));
    }
    std::str::from_utf8(&digits[..16 * words])
        .expect("hex digits are ASCII")
        .into()
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
        push_hex64(&mut s, rng.next_u64());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_random_ids_have_their_lengths() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        let mut s = String::new();
        push_hex64(&mut s, 0x0123_4567_89ab_cdef);
        push_hex64(&mut s, 1);
        assert_eq!(s, "0123456789abcdef0000000000000001");
        let id = random_hex(128);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(random_hex(128), random_hex(128));
        assert_ne!(random_u64(), 0);
        let arc = random_hex_arc(2);
        assert_eq!(arc.len(), 32);
        assert!(arc.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(random_hex_arc(1).len(), 16);
    }
}
