//! Page-aligned byte arenas for the core's buffers.

use std::fmt;

/// Where an [`Arena`] starts: on a page boundary.
pub const ALIGN: usize = 4096;

/// Zeroed bytes, made once, whose first byte is on a page boundary: the memory the core
/// lends as connection buffers ([`Storage::new`](nbecho_core::Storage::new)).
///
/// Why aligned: the kernel copies every received byte into these buffers, and that copy is
/// sensitive to where the destination starts. A large `Vec<u8>` gets its own mapping from
/// glibc, starting 16 bytes past a page boundary; on this project's benchmark machine
/// (AMD EPYC, Linux 6.18) a 64 KiB stream then spent 55 to 90 µs of server kernel time per
/// 64 KiB (epoll and io_uring drivers), against 40 to 50 µs with the buffers page-aligned
/// and 42 to 49 µs for the mio peer, whose 64 KiB buffer happens to sit elsewhere. `Vec`
/// cannot ask for an alignment without unsafe code, so the arena takes `ALIGN - 1` bytes
/// more and starts where the address is aligned. Zeroed pages cost nothing until used.
pub struct Arena {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Arena {
    /// `len` zeroed bytes starting on a page boundary (none for 0).
    pub fn new(len: usize) -> Self {
        if len == 0 {
            return Self {
                bytes: Vec::new(),
                start: 0,
                len: 0,
            };
        }
        let bytes = vec![0u8; len.saturating_add(ALIGN - 1)];
        let start = (ALIGN - bytes.as_ptr() as usize % ALIGN) % ALIGN;
        Self { bytes, start, len }
    }

    /// The bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The shape, never the bytes.
impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_page_boundary_with_the_length_asked_for() {
        for len in [1, 100, ALIGN, 3 * ALIGN + 5, 1 << 20] {
            let mut arena = Arena::new(len);
            let bytes = arena.as_mut_slice();
            assert_eq!(bytes.len(), len);
            assert_eq!(bytes.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert!(bytes.iter().all(|&b| b == 0));
        }
        assert!(Arena::new(0).is_empty());
        assert_eq!(Arena::new(0).as_mut_slice().len(), 0);
    }
}
