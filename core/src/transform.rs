//! What the server does to the bytes it echoes: [`Transform`], [`Uppercase`], [`Identity`].

/// A length-preserving transformation applied in place to received bytes.
///
/// The server calls [`Transform::apply`] exactly once for every received byte, in stream
/// order, on chunks whose boundaries depend on how the network split the data. A
/// transform whose output for a byte depends only on that byte (like [`Uppercase`]) gives
/// the same result however the stream is chunked; a transform that needs context must
/// keep its own state between calls.
pub trait Transform {
    /// Transforms `bytes` in place. The length cannot change: the echo is byte for byte.
    fn apply(&mut self, bytes: &mut [u8]);
}

/// ASCII uppercase, exactly like Python's `bytes.upper()`: `a`–`z` become `A`–`Z`, every
/// other byte (UTF-8 sequences included) passes unchanged. The default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uppercase;

impl Transform for Uppercase {
    // Inline: once per request, and as a call (the link-time optimiser's choice) its
    // frame and argument moves cost 9 instructions per 64 B message (callgrind).
    #[inline(always)]
    fn apply(&mut self, bytes: &mut [u8]) {
        // Not `make_ascii_uppercase`: its test, `b'a' <= b && b <= b'z'`, is an unsigned
        // range check, and SSE2 (x86-64's baseline) compares bytes only as signed. Moved
        // by `SHIFT` (wrapping), the 26 lowercase letters become the 26 largest signed
        // bytes, so one signed compare per byte finds them: 9% fewer instructions per KiB
        // than the range check (callgrind: 634 against 697), and 20 to 25% less time at
        // 64 B and 1 KiB in alternating runs. The largest, not the smallest: then the
        // constant is the compare's second operand, which `pcmpgtb` takes in place, with
        // no copy of it per 16 bytes (the epoll driver, per 64 B message: 234
        // instructions against 237). Same result for every byte (see the tests).
        //
        // In blocks of 64 bytes: a loop of known length is unrolled into four SSE2
        // registers' worth without a loop test between them (callgrind, the core alone
        // per message of 1 KiB: 1,347 instructions against 1,390 for the plain loop; 822
        // against 820 at 64 B).
        let mut chunks = bytes.chunks_exact_mut(64);
        for chunk in &mut chunks {
            upper(chunk);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            upper_rest(rest);
        }
    }
}

/// The bytes after the last 64-byte block. Out of line: inline, the constants of its own
/// vector loop were loaded on every call, before the first block, whatever the length (the
/// express lane in criterion at 64 B: 7.9 ns against 7.5 out of line). A tail costs a call
/// instead, and no more instructions (the core alone at 100 B: 213 against 217).
#[inline(never)]
fn upper_rest(bytes: &mut [u8]) {
    upper(bytes);
}

/// What moves `a..=z`, wrapping, to the 26 largest signed bytes (`0x66..=0x7f`).
const SHIFT: u8 = i8::MAX as u8 - b'z';
/// `b'a' - 1`, moved: the largest moved byte that is not a lowercase letter.
const BELOW: i8 = (b'a' - 1 + SHIFT) as i8;

#[inline(always)]
fn upper(bytes: &mut [u8]) {
    for b in bytes {
        let moved = b.wrapping_add(SHIFT) as i8;
        *b -= u8::from(moved > BELOW) << 5;
    }
}

/// No change: a plain echo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity;

impl Transform for Identity {
    fn apply(&mut self, _bytes: &mut [u8]) {}
}

/// A built-in transform chosen at run time (the binary's `--mode upper|echo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// [`Uppercase`].
    #[default]
    Upper,
    /// [`Identity`].
    Echo,
}

impl Transform for Mode {
    fn apply(&mut self, bytes: &mut [u8]) {
        match self {
            Self::Upper => Uppercase.apply(bytes),
            Self::Echo => Identity.apply(bytes),
        }
    }
}

impl<T: Transform + ?Sized> Transform for &mut T {
    fn apply(&mut self, bytes: &mut [u8]) {
        (**self).apply(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python: `bytes(range(256)).upper()`.
    fn python_upper(b: u8) -> u8 {
        if b.is_ascii_lowercase() {
            b - 32
        } else {
            b
        }
    }

    #[test]
    fn uppercase_matches_python_bytes_upper_for_all_256_values() {
        let mut all: [u8; 256] = core::array::from_fn(|i| i as u8);
        Uppercase.apply(&mut all);
        for (i, &b) in all.iter().enumerate() {
            assert_eq!(b, python_upper(i as u8), "byte {i:#04x}");
        }
    }

    #[test]
    fn uppercase_is_the_same_across_its_blocks() {
        // Every length from 0 to three blocks and a part, and at each, byte values that
        // shift with the length (so each position sees letters and non-letters).
        for len in 0..=200 {
            let input: [u8; 200] = core::array::from_fn(|i| (i * 37 + len) as u8);
            let mut bytes = input;
            Uppercase.apply(&mut bytes[..len]);
            for (i, (&got, &was)) in bytes.iter().zip(&input).enumerate() {
                let want = if i < len { python_upper(was) } else { was };
                assert_eq!(got, want, "length {len}, byte {i}");
            }
        }
    }

    #[test]
    fn uppercase_leaves_utf8_alone() {
        let mut s = *b"h\xc3\xa9llo \xc3\x9f";
        Uppercase.apply(&mut s);
        assert_eq!(&s, b"H\xc3\xa9LLO \xc3\x9f");
    }

    #[test]
    fn identity_and_mode() {
        let mut s = *b"abc";
        Identity.apply(&mut s);
        assert_eq!(&s, b"abc");
        Mode::Echo.apply(&mut s);
        assert_eq!(&s, b"abc");
        Mode::Upper.apply(&mut s);
        assert_eq!(&s, b"ABC");
    }
}
