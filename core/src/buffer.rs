//! The buffer slab: a caller-provided byte arena cut into equal blocks, lent to a
//! connection only while it holds data.
//!
//! Written by hand because `heapless::pool` manages `'static` blocks of a size fixed at
//! compile time, while nbecho's block size and count come from the command line and its
//! arena from the caller (a `static` array or one `Vec` made at start-up).
//!
//! Free blocks form an intrusive LIFO list: a free block's first four bytes hold the index
//! of the next free block, so the list needs no storage of its own. Blocks are handed out
//! from the list first (the most recently used, still in cache) and only then from the
//! never-used tail, so on an OS that commits memory lazily the arena's untouched pages
//! never cost resident memory.

use crate::conn::NIL;

/// Why [`Storage::new`](crate::Storage::new) refused its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// There must be at least one connection slot.
    NoSlots,
    /// Blocks must hold at least [`MIN_BLOCK`] bytes.
    BlockTooSmall,
    /// The arena holds no whole block.
    NoBlocks,
    /// More than `u32::MAX - 1` slots or blocks (`2^31 - 1` large blocks), or blocks over
    /// [`MAX_BLOCK`] bytes.
    TooLarge,
    /// Large buffers must be larger than the small ones.
    LargeNotLarger,
    /// The table of what is in flight needs an entry per slot.
    TooFewCompletions,
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoSlots => "at least one connection slot is needed",
            Self::BlockTooSmall => "the buffer size is below the minimum of 16 bytes",
            Self::NoBlocks => "the buffer arena is smaller than one buffer",
            Self::TooLarge => "too many slots or buffers, or a buffer over 2 GiB - 1",
            Self::LargeNotLarger => "large buffers must be larger than the small ones",
            Self::TooFewCompletions => {
                "the table of operations in flight has fewer entries than slots"
            }
        })
    }
}

impl core::error::Error for StorageError {}

/// The smallest block: room for the free-list link, and below it echoing makes no sense.
pub const MIN_BLOCK: usize = 16;

/// The largest block, 2 GiB - 1: offsets in a ring of this size (`head + len`, below twice
/// the block) still fit the 32 bits a [`Slot`](crate::Slot) keeps them in.
pub const MAX_BLOCK: usize = (u32::MAX / 2) as usize;

pub(crate) struct Pool<'a> {
    arena: &'a mut [u8],
    block_size: u32,
    blocks: u32,
    /// The block released last, kept off the free list and lent first: a request and
    /// its answer take and give back one block with no link to read or write.
    spare: u32,
    /// Head of the intrusive free list.
    free: u32,
    /// Blocks at or above this index have never been lent.
    fresh: u32,
    in_use: u32,
}

/// The shape, never the arena's bytes.
impl core::fmt::Debug for Pool<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pool")
            .field("block_size", &self.block_size)
            .field("blocks", &self.blocks)
            .field("in_use", &self.in_use)
            .field("never_used", &(self.blocks - self.fresh))
            .finish_non_exhaustive()
    }
}

impl<'a> Pool<'a> {
    pub(crate) fn new(arena: &'a mut [u8], block_size: usize) -> Result<Self, StorageError> {
        if block_size < MIN_BLOCK {
            return Err(StorageError::BlockTooSmall);
        }
        if block_size > MAX_BLOCK {
            return Err(StorageError::TooLarge);
        }
        let blocks = arena.len() / block_size;
        if blocks == 0 {
            return Err(StorageError::NoBlocks);
        }
        if blocks >= NIL as usize {
            return Err(StorageError::TooLarge);
        }
        Ok(Self {
            arena,
            block_size: block_size as u32,
            blocks: blocks as u32,
            spare: NIL,
            free: NIL,
            fresh: 0,
            in_use: 0,
        })
    }

    #[cfg(test)]
    pub(crate) fn blocks(&self) -> u32 {
        self.blocks
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> u32 {
        self.in_use
    }

    /// True if [`alloc`](Self::alloc) would lend a block.
    #[inline]
    pub(crate) fn can_lend(&self) -> bool {
        self.in_use < self.blocks
    }

    /// Lends a block, or `None` when all are lent.
    #[inline]
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        let block = if self.spare != NIL {
            core::mem::replace(&mut self.spare, NIL)
        } else if self.free != NIL {
            let block = self.free;
            let link = self.range(block, 0, 4);
            // One bounds check for the four bytes (a block holds at least MIN_BLOCK).
            let next = self
                .arena
                .get(link)
                .map_or(NIL, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            // A link is only ever written by `release`; anything out of range would be a
            // bug, and ends the list rather than lending a wrong block.
            self.free = if next < self.blocks { next } else { NIL };
            block
        } else if self.fresh < self.blocks {
            self.fresh += 1;
            self.fresh - 1
        } else {
            return None;
        };
        self.in_use += 1;
        Some(block)
    }

    /// The block [`alloc`](Self::alloc) lends next, made the spare, not lent; `None`
    /// when all are lent.
    #[inline]
    fn next_to_lend(&mut self) -> Option<u32> {
        if self.spare == NIL {
            self.refill_spare();
        }
        (self.spare != NIL).then_some(self.spare)
    }

    /// No spare: the block lent next becomes it. Out of line: the express lane leaves
    /// the spare where it found it.
    #[cold]
    #[inline(never)]
    fn refill_spare(&mut self) {
        if let Some(block) = self.alloc() {
            self.release(block);
        }
    }

    /// Takes a block back. Forced inline (the link-time optimiser left it a call, once
    /// per request), with the free list's push out of line.
    #[inline(always)]
    pub(crate) fn release(&mut self, block: u32) {
        debug_assert!(block < self.blocks);
        // The spare before goes to the list: blocks are lent again most recent first.
        let older = core::mem::replace(&mut self.spare, block);
        if older != NIL {
            self.push_free(older);
        }
        self.in_use -= 1;
    }

    /// Puts `block` at the head of the free list (out of line: a request and its answer
    /// take and give back the spare alone).
    #[inline(never)]
    fn push_free(&mut self, block: u32) {
        let link = self.range(block, 0, 4);
        self.arena[link].copy_from_slice(&self.free.to_le_bytes());
        self.free = block;
    }

    /// The arena range of `len` bytes at `offset` inside `block`.
    #[inline]
    pub(crate) fn range(&self, block: u32, offset: u32, len: u32) -> core::ops::Range<usize> {
        // A range past its block is another connection's buffer: never in bounds-checked
        // builds (the simulation's), whatever the arithmetic before it.
        debug_assert!(
            u64::from(offset) + u64::from(len) <= u64::from(self.block_size),
            "bytes {offset}..+{len} are outside a block of {}",
            self.block_size
        );
        let start = block as usize * self.block_size as usize + offset as usize;
        start..start + len as usize
    }

    #[inline]
    pub(crate) fn bytes(&self, range: core::ops::Range<usize>) -> &[u8] {
        &self.arena[range]
    }

    #[inline]
    pub(crate) fn bytes_mut(&mut self, range: core::ops::Range<usize>) -> &mut [u8] {
        &mut self.arena[range]
    }
}

/// Marks a block id as one of the large class (ids are `u32`; `NIL` is never a block).
const LARGE: u32 = 1 << 31;

/// The buffers of a server: small blocks, and optionally large ones for bulk transfers.
///
/// Block ids name a block of either class (large ones carry [`LARGE`]); byte ranges are
/// in one space, the small arena first, so a range names its arena too.
pub(crate) struct Buffers<'a> {
    small: Pool<'a>,
    large: Option<Pool<'a>>,
}

impl core::fmt::Debug for Buffers<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Buffers")
            .field("small", &self.small)
            .field("large", &self.large)
            .finish()
    }
}

impl<'a> Buffers<'a> {
    pub(crate) fn new(small: Pool<'a>) -> Self {
        Self { small, large: None }
    }

    /// Adds the large class; its blocks must be larger than the small ones.
    pub(crate) fn with_large(self, large: Pool<'a>) -> Result<Self, StorageError> {
        if large.block_size <= self.small.block_size {
            return Err(StorageError::LargeNotLarger);
        }
        if large.blocks >= LARGE {
            return Err(StorageError::TooLarge);
        }
        Ok(Self {
            small: self.small,
            large: Some(large),
        })
    }

    #[inline]
    pub(crate) fn small_size(&self) -> u32 {
        self.small.block_size
    }

    #[inline]
    pub(crate) fn large_size(&self) -> Option<u32> {
        self.large.as_ref().map(|p| p.block_size)
    }

    /// Blocks of both classes, and how many are lent.
    #[inline]
    pub(crate) fn counts(&self) -> (u32, u32) {
        let (blocks, in_use) = self.large.as_ref().map_or((0, 0), |p| (p.blocks, p.in_use));
        (self.small.blocks + blocks, self.small.in_use + in_use)
    }

    /// True if `block` is of the large class.
    #[inline]
    pub(crate) fn is_large(&self, block: u32) -> bool {
        self.large.is_some() && block & LARGE != 0
    }

    /// Bytes in block `block`.
    #[inline]
    pub(crate) fn capacity(&self, block: u32) -> u32 {
        match &self.large {
            Some(large) if block & LARGE != 0 => large.block_size,
            _ => self.small.block_size,
        }
    }

    /// True if [`alloc`](Self::alloc) would lend a block of some class.
    #[inline]
    pub(crate) fn can_lend(&self) -> bool {
        self.small.can_lend() || self.large.as_ref().is_some_and(Pool::can_lend)
    }

    /// Lends a block: a large one if `large` is preferred and one is free, else a small
    /// one, else whatever is free.
    #[inline]
    pub(crate) fn alloc(&mut self, large: bool) -> Option<u32> {
        let take_large =
            |pool: &mut Option<Pool<'a>>| pool.as_mut().and_then(Pool::alloc).map(|b| b | LARGE);
        if large {
            take_large(&mut self.large).or_else(|| self.small.alloc())
        } else {
            self.small.alloc().or_else(|| take_large(&mut self.large))
        }
    }

    /// The express lane's buffer: the small block lent next, with its bytes, not lent
    /// (a request echoed whole leaves it where it was, so that it costs no lending and
    /// no giving back); [`take_small`](Self::take_small) lends it. Its class needs no
    /// choosing, and its bytes no range to find. `None`: no small block is free.
    #[inline]
    pub(crate) fn peek_small(&mut self) -> Option<(u32, &mut [u8])> {
        let block = self.small.next_to_lend()?;
        let whole = self.small.range(block, 0, self.small.block_size);
        Some((block, &mut self.small.arena[whole]))
    }

    /// Lends the block that [`peek_small`](Self::peek_small) showed.
    #[inline]
    pub(crate) fn take_small(&mut self, block: u32) {
        let lent = self.small.alloc();
        debug_assert_eq!(lent, Some(block), "the block shown is the one lent next");
    }

    /// Takes a block back.
    #[inline]
    pub(crate) fn release(&mut self, block: u32) {
        match &mut self.large {
            Some(large) if block & LARGE != 0 => large.release(block & !LARGE),
            _ => self.small.release(block),
        }
    }

    /// The range of `len` bytes at `offset` inside `block`.
    #[inline]
    pub(crate) fn range(&self, block: u32, offset: u32, len: u32) -> core::ops::Range<usize> {
        match &self.large {
            Some(large) if block & LARGE != 0 => {
                let base = self.small.arena.len();
                let r = large.range(block & !LARGE, offset, len);
                base + r.start..base + r.end
            }
            _ => self.small.range(block, offset, len),
        }
    }

    #[inline]
    pub(crate) fn bytes(&self, range: core::ops::Range<usize>) -> &[u8] {
        let base = self.small.arena.len();
        match &self.large {
            Some(large) if range.start >= base => large.bytes(range.start - base..range.end - base),
            _ => self.small.bytes(range),
        }
    }

    #[inline]
    pub(crate) fn bytes_mut(&mut self, range: core::ops::Range<usize>) -> &mut [u8] {
        let base = self.small.arena.len();
        match &mut self.large {
            Some(large) if range.start >= base => {
                large.bytes_mut(range.start - base..range.end - base)
            }
            _ => self.small.bytes_mut(range),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_every_block_once_then_reuses_the_most_recent() {
        let mut arena = [0u8; 64];
        let mut pool = Pool::new(&mut arena, 16).unwrap();
        assert_eq!(pool.blocks(), 4);
        let got: [u32; 4] = core::array::from_fn(|_| pool.alloc().unwrap());
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(pool.alloc(), None);
        pool.release(1);
        pool.release(3);
        pool.release(0);
        assert_eq!(pool.in_use(), 1);
        assert!(pool.can_lend());
        // The spare, then the free list: LIFO throughout, the block still in cache first.
        assert_eq!(pool.alloc(), Some(0));
        assert_eq!(pool.alloc(), Some(3));
        assert_eq!(pool.alloc(), Some(1));
        assert_eq!(pool.alloc(), None);
        assert!(!pool.can_lend());
        pool.release(2);
        assert_eq!(pool.alloc(), Some(2));
    }

    #[test]
    fn rejects_bad_geometry() {
        let mut arena = [0u8; 64];
        assert_eq!(
            Pool::new(&mut arena, 8).unwrap_err(),
            StorageError::BlockTooSmall
        );
        assert_eq!(
            Pool::new(&mut arena, 128).unwrap_err(),
            StorageError::NoBlocks
        );
        let pool = Pool::new(&mut arena, 20).unwrap();
        assert_eq!(pool.blocks(), 3, "a partial block at the end is not used");
        // A block whose ring offsets would overflow 32 bits is refused, not wrapped
        // (the check comes before any byte of it is needed).
        let mut one = [0u8; 64];
        assert_eq!(
            Pool::new(&mut one, MAX_BLOCK + 1).unwrap_err(),
            StorageError::TooLarge
        );
    }

    #[test]
    fn debug_shows_the_shape_not_the_bytes() {
        let mut arena = [b'z'; 64];
        let mut pool = Pool::new(&mut arena, 16).unwrap();
        let _ = pool.alloc();
        let shown = format!("{pool:?}");
        assert_eq!(
            shown,
            "Pool { block_size: 16, blocks: 4, in_use: 1, never_used: 3, .. }"
        );
    }
}
