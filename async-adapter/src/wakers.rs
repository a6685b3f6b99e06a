//! A waker per connection, without allocation: [`Wakers`].
//!
//! An async runtime wakes a *task*; one task serving many connections must know *which*
//! of them woke it, or it would have to try every connection on every wake-up. Each
//! connection gets its own [`Waker`], whose wake puts the connection's entry on a ready
//! list and wakes the driver's task; the driver takes the whole list at once and reports
//! each entry to the core as readiness. Cost: O(1) per wake, O(ready) per wake-up.
//!
//! Written by hand because no no_std crate makes wakers without `alloc` (futures'
//! `ArcWake` and std's `Wake` both need an `Arc`). This is the crate's only `unsafe`:
//! the [`RawWakerVTable`] functions, whose data pointer is always a `&'static Entry`.

#![allow(unsafe_code)]

use core::fmt;
use core::future::poll_fn;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use core::task::{Poll, RawWaker, RawWakerVTable, Waker};

use atomic_waker::AtomicWaker;

/// End of the ready list.
const NONE: u32 = u32::MAX;

/// The ready list (a lock-free stack of entry indices, taken whole by its one consumer,
/// so it has no ABA problem) and the driver task's waker.
struct Shared {
    head: AtomicU32,
    task: AtomicWaker,
}

/// One waker's entry.
struct Entry {
    index: u32,
    /// The next entry on the ready list while `queued`.
    next: AtomicU32,
    /// On the ready list: a second wake before the driver takes the list is a no-op.
    queued: AtomicBool,
    /// The `Shared` of the `'static` set this entry belongs to, set before its first
    /// waker exists.
    home: AtomicPtr<Shared>,
}

impl Entry {
    const fn new(index: u32) -> Self {
        Self {
            index,
            next: AtomicU32::new(NONE),
            queued: AtomicBool::new(false),
            home: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl Shared {
    /// Puts `entry` on the ready list (unless it is on it) and wakes the driver.
    fn push(&self, entry: &Entry) {
        if entry.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            entry.next.store(head, Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                entry.index,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        self.task.wake();
    }
}

/// What a wake said: the listener, or the connection in this slot
/// ([`ConnId::index`](nbecho_core::ConnId::index)), may make progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The listener may have a connection to accept.
    Listener,
    /// The connection in this slot may read or write.
    Conn(usize),
}

/// Wakers for `N` connections and the listener, in a `static` (wakers can outlive any
/// borrow: a runtime keeps them where it likes):
///
/// ```
/// use nbecho_async::{Ready, Wakers};
///
/// static WAKERS: Wakers<8> = Wakers::new();
///
/// WAKERS.conn(3).unwrap().wake(); // what a runtime does when connection 3 can go on
/// let mut woken = Vec::new();
/// WAKERS.drain(|ready| woken.push(ready)); // what the driver does on its wake-up
/// assert_eq!(woken, [Ready::Conn(3)]);
/// ```
pub struct Wakers<const N: usize> {
    shared: Shared,
    conns: [Entry; N],
    listener: Entry,
}

impl<const N: usize> Default for Wakers<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for Wakers<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakers")
            .field("conns", &N)
            .field("pending", &self.is_pending())
            .finish()
    }
}

impl<const N: usize> Wakers<N> {
    /// Wakers for connections `0..N` and the listener, none woken.
    pub const fn new() -> Self {
        assert!(N < NONE as usize, "too many connections for a waker set");
        let mut conns = [const { Entry::new(0) }; N];
        let mut i = 0;
        while i < N {
            conns[i] = Entry::new(i as u32);
            i += 1;
        }
        Self {
            shared: Shared {
                head: AtomicU32::new(NONE),
                task: AtomicWaker::new(),
            },
            conns,
            listener: Entry::new(N as u32),
        }
    }

    /// How many connections it has wakers for.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The waker of the connection in slot `index`; `None` if `index >= N`.
    pub fn conn(&'static self, index: usize) -> Option<Waker> {
        self.conns.get(index).map(|entry| self.waker(entry))
    }

    /// The listener's waker.
    pub fn listener(&'static self) -> Waker {
        self.waker(&self.listener)
    }

    /// Marks `what` ready, as its waker would (a connection's first readiness, when it is
    /// admitted: nothing has been tried on it yet, so nothing has registered its waker).
    pub fn mark(&self, what: Ready) {
        let entry = match what {
            Ready::Listener => &self.listener,
            Ready::Conn(index) => match self.conns.get(index) {
                Some(entry) => entry,
                None => return,
            },
        };
        self.shared.push(entry);
    }

    /// True if some waker was woken since the last [`drain`](Self::drain).
    pub fn is_pending(&self) -> bool {
        self.shared.head.load(Ordering::Acquire) != NONE
    }

    /// Takes everything woken since the last call, calling `f` once for each.
    pub fn drain(&self, mut f: impl FnMut(Ready)) {
        let mut index = self.shared.head.swap(NONE, Ordering::AcqRel);
        while index != NONE {
            let (entry, ready) = match self.conns.get(index as usize) {
                Some(entry) => (entry, Ready::Conn(index as usize)),
                None => (&self.listener, Ready::Listener),
            };
            // `next` before `queued` is cleared: from then on a wake may push the entry
            // again and overwrite `next`.
            index = entry.next.load(Ordering::Acquire);
            entry.queued.store(false, Ordering::Release);
            f(ready);
        }
    }

    /// Resolves once some waker was woken (at once if one was): the driver task's wait.
    pub async fn woken(&self) {
        poll_fn(|cx| {
            self.shared.task.register(cx.waker());
            if self.is_pending() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    fn waker(&'static self, entry: &'static Entry) -> Waker {
        entry
            .home
            .store(ptr::from_ref(&self.shared).cast_mut(), Ordering::Release);
        let raw = RawWaker::new(ptr::from_ref(entry).cast(), &VTABLE);
        // SAFETY: the data pointer is a `&'static Entry` whose `home` was just set to a
        // `&'static Shared`; the vtable functions only read through them, and every
        // field they touch is atomic, so the waker may be sent and shared across threads.
        unsafe { Waker::from_raw(raw) }
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

/// SAFETY (all four): `data` comes from `Wakers::waker`, a `&'static Entry`.
unsafe fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake(data: *const ()) {
    // SAFETY: see above; `home` was set to a `&'static Shared` before the waker existed,
    // and that store happens-before any use of the waker (it is published with it).
    let entry = unsafe { &*data.cast::<Entry>() };
    let home = entry.home.load(Ordering::Acquire);
    // SAFETY: as above, never null once a waker exists.
    unsafe { &*home }.push(entry);
}

unsafe fn drop(_: *const ()) {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn drained<const N: usize>(wakers: &Wakers<N>) -> Vec<Ready> {
        let mut seen = Vec::new();
        wakers.drain(|r| seen.push(r));
        seen
    }

    #[test]
    fn a_wake_names_its_connection_once_until_drained() {
        static W: Wakers<4> = Wakers::new();
        assert!(!W.is_pending());
        let two = W.conn(2).unwrap();
        two.wake_by_ref();
        let cloned = two.clone();
        cloned.wake();
        W.listener().wake();
        assert!(W.is_pending());
        let mut seen = drained(&W);
        seen.sort_by_key(|r| match r {
            Ready::Conn(i) => *i,
            Ready::Listener => usize::MAX,
        });
        assert_eq!(seen, [Ready::Conn(2), Ready::Listener]);
        assert!(!W.is_pending());
        assert_eq!(drained(&W), []);
        // Drained entries can be woken again.
        two.wake_by_ref();
        W.mark(Ready::Conn(0));
        W.mark(Ready::Conn(9)); // out of range: ignored
        assert_eq!(drained(&W).len(), 2);
        assert!(W.conn(4).is_none());
    }

    #[test]
    fn wakes_from_other_threads_are_all_seen() {
        static W: Wakers<64> = Wakers::new();
        let wakers: Vec<Waker> = (0..64).map(|i| W.conn(i).unwrap()).collect();
        let mut seen = [false; 64];
        std::thread::scope(|s| {
            for chunk in wakers.chunks(16) {
                s.spawn(move || {
                    for _ in 0..1000 {
                        for w in chunk {
                            w.wake_by_ref();
                        }
                    }
                });
            }
            let mut rounds = 0;
            while seen.iter().any(|s| !s) {
                rounds += 1;
                assert!(rounds < 10_000_000, "a wake was lost");
                W.drain(|r| {
                    if let Ready::Conn(i) = r {
                        seen[i] = true;
                    }
                });
            }
        });
        // Every entry is off the list again and can be queued anew.
        W.drain(|_| {});
        for w in &wakers {
            w.wake_by_ref();
        }
        assert_eq!(drained(&W).len(), 64);
    }
}
