//! Intrusive doubly linked lists threaded through the connection slots: push, pop and
//! unlink in O(1), with no storage beyond two indices in each slot.
//!
//! Written by hand because the lists live inside caller-provided slots that are indexed,
//! not pointed to (no `unsafe`, no allocation): `heapless` has no intrusive list, and
//! `intrusive-collections` needs pointers to nodes that outlive the list.

use crate::conn::{Slot, NIL};

/// A slot's place in one list: the neighbours' indices, or [`NIL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Links {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl Default for Links {
    fn default() -> Self {
        Self::UNLINKED
    }
}

impl Links {
    pub(crate) const UNLINKED: Self = Self {
        prev: NIL,
        next: NIL,
    };
}

/// Which of an item's links a list uses (a slot's, or a flight table entry's).
pub(crate) type Select<E = Slot> = fn(&mut E) -> &mut Links;

/// The ends of one list. Each list is used with one [`Select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct List {
    head: u32,
    tail: u32,
}

impl List {
    pub(crate) const EMPTY: Self = Self {
        head: NIL,
        tail: NIL,
    };

    /// The first index, if any.
    #[inline]
    pub(crate) fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// True if `idx` is the last index.
    #[inline]
    pub(crate) fn is_back(&self, idx: u32) -> bool {
        self.tail == idx
    }

    /// The index after `idx`, which must be on the list.
    #[inline]
    pub(crate) fn next<E>(slots: &mut [E], links: Select<E>, idx: u32) -> Option<u32> {
        let next = links(&mut slots[idx as usize]).next;
        (next != NIL).then_some(next)
    }

    /// True if `idx` is on this list.
    #[inline]
    pub(crate) fn contains<E>(&self, slots: &mut [E], links: Select<E>, idx: u32) -> bool {
        self.head == idx || links(&mut slots[idx as usize]).prev != NIL
    }

    /// Appends `idx`, which must not be on the list.
    #[inline]
    pub(crate) fn push_back<E>(&mut self, slots: &mut [E], links: Select<E>, idx: u32) {
        *links(&mut slots[idx as usize]) = Links {
            prev: self.tail,
            next: NIL,
        };
        match self.tail {
            NIL => self.head = idx,
            tail => links(&mut slots[tail as usize]).next = idx,
        }
        self.tail = idx;
    }

    /// Takes the first index off the list.
    #[inline]
    pub(crate) fn pop_front<E>(&mut self, slots: &mut [E], links: Select<E>) -> Option<u32> {
        let idx = self.front()?;
        self.remove(slots, links, idx);
        Some(idx)
    }

    /// Takes `idx`, which must be on the list, off it.
    #[inline]
    pub(crate) fn remove<E>(&mut self, slots: &mut [E], links: Select<E>, idx: u32) {
        let Links { prev, next } =
            core::mem::replace(links(&mut slots[idx as usize]), Links::UNLINKED);
        match prev {
            NIL => self.head = next,
            prev => links(&mut slots[prev as usize]).next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => links(&mut slots[next as usize]).prev = prev,
        }
    }

    /// Takes `idx` off the list if it is on it; true if it was.
    #[inline]
    pub(crate) fn unlink<E>(&mut self, slots: &mut [E], links: Select<E>, idx: u32) -> bool {
        let listed = self.contains(slots, links, idx);
        if listed {
            self.remove(slots, links, idx);
        }
        listed
    }

    /// Moves `idx`, which must be on the list, to its end.
    #[inline]
    pub(crate) fn move_to_back<E>(&mut self, slots: &mut [E], links: Select<E>, idx: u32) {
        if self.tail != idx {
            self.remove(slots, links, idx);
            self.push_back(slots, links, idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(slot: &mut Slot) -> &mut Links {
        &mut slot.wait
    }

    fn order(list: &List, slots: &mut [Slot]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = list.front();
        while let Some(idx) = at {
            out.push(idx);
            at = Some(wait(&mut slots[idx as usize]).next).filter(|&n| n != NIL);
        }
        out
    }

    #[test]
    fn push_pop_remove_and_move_keep_order() {
        let mut slots = [Slot::EMPTY; 5];
        let mut list = List::EMPTY;
        for idx in [3, 0, 4, 1] {
            list.push_back(&mut slots, wait, idx);
        }
        assert_eq!(order(&list, &mut slots), [3, 0, 4, 1]);
        assert!(list.contains(&mut slots, wait, 3) && list.contains(&mut slots, wait, 1));
        assert!(!list.contains(&mut slots, wait, 2));
        list.remove(&mut slots, wait, 4);
        assert!(!list.unlink(&mut slots, wait, 4), "not on it any more");
        assert!(list.unlink(&mut slots, wait, 1));
        list.push_back(&mut slots, wait, 1);
        list.move_to_back(&mut slots, wait, 3);
        list.move_to_back(&mut slots, wait, 3);
        assert_eq!(order(&list, &mut slots), [0, 1, 3]);
        assert!(!list.contains(&mut slots, wait, 4));
        assert_eq!(list.pop_front(&mut slots, wait), Some(0));
        list.remove(&mut slots, wait, 3);
        assert_eq!(list.pop_front(&mut slots, wait), Some(1));
        assert_eq!(list.pop_front(&mut slots, wait), None);
        assert_eq!(list, List::EMPTY);
        assert!(slots.iter().all(|s| s.wait == Links::UNLINKED));
    }
}
