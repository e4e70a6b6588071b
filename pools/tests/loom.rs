//! Loom model checks of every lock-free structure the lock-free allocator uses, on the
//! allocator's own code (`crate::sync` is loom under `cfg(loom)`). Each test asserts the
//! happens-before edge the allocator relies on: loom reports a data race if a
//! `loom::cell::UnsafeCell` is read without one. Run with:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom cargo test -p pools --test loom --release
//! ```
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use pools::alloc::lockfree::loom_exports::{
    ByteBudget, HeapState, IntrusiveStack, Linked, PushOutcome, RemoteFreeStack, RemoteHead,
    SlabBump,
};
use std::ptr::{self, NonNull};

/// A block as the remote-free stack sees it: its first word is the link, the rest is
/// user data (a loom cell, so loom checks who may read it when).
#[repr(C, align(16))]
struct Block {
    link: usize,
    payload: UnsafeCell<u64>,
}

fn new_block(payload: u64) -> usize {
    Box::into_raw(Box::new(Block {
        link: 0,
        payload: UnsafeCell::new(payload),
    })) as usize
}

/// Walk a taken list: read every payload (the HB check) and free the blocks.
fn drain(mut top: *mut u8, seen: &mut Vec<u64>) {
    while !top.is_null() {
        let block = top.cast::<Block>();
        // SAFETY: blocks on the list are boxed `Block`s owned by the taker now.
        unsafe {
            seen.push((*block).payload.with(|p| *p));
            top = (*block).link as *mut u8;
            drop(Box::from_raw(block));
        }
    }
}

/// Two threads free blocks remotely while the owner takes all: every block arrives
/// exactly once, and the bytes written before each push are visible to the owner.
#[test]
fn remote_pushes_race_owner_take_all() {
    loom::model(|| {
        let stack = Arc::new(RemoteFreeStack::new());
        let pushers: Vec<_> = (1..=2u64)
            .map(|id| {
                let stack = Arc::clone(&stack);
                let block = new_block(0);
                thread::spawn(move || {
                    // SAFETY: the block is this thread's until pushed.
                    unsafe {
                        (*(block as *mut Block)).payload.with_mut(|p| *p = id * 10);
                        assert_eq!(
                            stack.push(NonNull::new_unchecked(block as *mut u8)),
                            PushOutcome::Pushed
                        );
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        drain(stack.take_all(), &mut seen);
        for p in pushers {
            p.join().unwrap();
        }
        drain(stack.take_all(), &mut seen);
        seen.sort_unstable();
        assert_eq!(seen, vec![10, 20]);
        assert_eq!(stack.peek(), RemoteHead::EMPTY);
    });
}

/// The block's life across threads: the owner writes it and hands it out, another
/// thread writes it and frees it remotely, the owner takes it back and reuses it. Loom
/// checks that the three writes are ordered.
#[test]
fn cross_thread_free_then_owner_reuse() {
    loom::model(|| {
        let stack = Arc::new(RemoteFreeStack::new());
        let block = new_block(0);
        // SAFETY: the owner's block before it is handed out.
        unsafe { (*(block as *mut Block)).payload.with_mut(|p| *p = 1) };
        let remote = {
            let stack = Arc::clone(&stack);
            // Spawning is the user's hand-off (a channel in real programs).
            thread::spawn(move || {
                // SAFETY: the block was handed to this thread; it frees it after writing.
                unsafe {
                    (*(block as *mut Block)).payload.with_mut(|p| {
                        assert_eq!(*p, 1);
                        *p = 2;
                    });
                    stack.push(NonNull::new_unchecked(block as *mut u8));
                }
            })
        };
        let top = stack.take_all();
        if !top.is_null() {
            // Reuse: the owner writes the block again.
            // SAFETY: taken from the stack, the block is the owner's again.
            unsafe {
                (*top.cast::<Block>()).payload.with_mut(|p| {
                    assert_eq!(*p, 2);
                    *p = 3;
                });
            }
        }
        remote.join().unwrap();
        let mut seen = Vec::new();
        drain(
            if top.is_null() { stack.take_all() } else { top },
            &mut seen,
        );
        assert_eq!(seen.len(), 1);
    });
}

/// A slab-like record on a heap's `reclaimed` stack.
struct Record {
    link: UnsafeCell<*mut Record>,
    value: UnsafeCell<u64>,
}

// SAFETY: `link` is the record's only link.
unsafe impl Linked for Record {
    fn link(&self) -> &UnsafeCell<*mut Record> {
        &self.link
    }
}

fn new_record(value: u64) -> usize {
    Box::into_raw(Box::new(Record {
        link: UnsafeCell::new(ptr::null_mut()),
        value: UnsafeCell::new(value),
    })) as usize
}

/// The FULL hand-shake: the owner unlists a slab as FULL and may take it back with a local
/// free, while remote frees arrive. Per FULL period exactly one party gets the slab back:
/// the owner (`try_clear_full`) or one pusher (`ClearedFull`), who queues it on the heap's
/// `reclaimed` stack; the owner then sees the queued slab with its fields.
#[test]
fn full_flag_hands_the_slab_back_exactly_once() {
    loom::model(|| {
        let stack = Arc::new(RemoteFreeStack::new());
        let reclaimed = Arc::new(IntrusiveStack::<Record>::new());
        let slab = new_record(0);
        let pushers: Vec<_> = (0..2)
            .map(|_| {
                let stack = Arc::clone(&stack);
                let reclaimed = Arc::clone(&reclaimed);
                let block = new_block(0);
                thread::spawn(move || {
                    // SAFETY: the block is this thread's until pushed; the slab record
                    // lives until the end of the model.
                    unsafe {
                        let outcome = stack.push(NonNull::new_unchecked(block as *mut u8));
                        if outcome == PushOutcome::ClearedFull {
                            let record = slab as *mut Record;
                            (*record).value.with_mut(|v| *v = 7);
                            reclaimed.push(NonNull::new_unchecked(record));
                        }
                        outcome == PushOutcome::ClearedFull
                    }
                })
            })
            .collect();
        let marked = stack.try_mark_full();
        let owner_took_back = marked && stack.try_clear_full();
        let cleared_by_pushers = pushers
            .into_iter()
            .map(|p| p.join().unwrap() as u32)
            .sum::<u32>();
        if marked {
            assert_eq!(owner_took_back as u32 + cleared_by_pushers, 1);
        } else {
            assert_eq!(cleared_by_pushers, 0);
        }
        let queued = reclaimed.take_all();
        assert_eq!(queued.is_null(), cleared_by_pushers == 0);
        if let Some(record) = NonNull::new(queued) {
            // SAFETY: the record is alive; taken from the stack it is the owner's.
            unsafe {
                assert_eq!(record.as_ref().value.with(|v| *v), 7);
                assert!(IntrusiveStack::next(record).is_null());
            }
        }
        assert!(!stack.peek().is_full());
        let mut seen = Vec::new();
        drain(stack.take_all(), &mut seen);
        assert_eq!(seen.len(), 2);
        // SAFETY: boxed above, no longer referenced.
        unsafe { drop(Box::from_raw(slab as *mut Record)) };
    });
}

/// The push-only registries (heaps, regions, large-object slot blocks): a reader walking
/// the list while others push sees each node's fields as written before its push.
#[test]
fn push_only_list_publishes_nodes() {
    loom::model(|| {
        let list = Arc::new(IntrusiveStack::<Record>::new());
        let pushers: Vec<_> = (1..=2u64)
            .map(|v| {
                let list = Arc::clone(&list);
                thread::spawn(move || {
                    let record = new_record(0) as *mut Record;
                    // SAFETY: fresh record, published by the push below.
                    unsafe {
                        (*record).value.with_mut(|p| *p = v);
                        list.push(NonNull::new_unchecked(record));
                    }
                })
            })
            .collect();
        let mut sum = 0;
        let mut node = list.head();
        while let Some(record) = NonNull::new(node) {
            // SAFETY: listed records live until the end of the model.
            unsafe {
                sum += record.as_ref().value.with(|v| *v);
                node = IntrusiveStack::next(record);
            }
        }
        assert!(sum <= 3);
        for p in pushers {
            p.join().unwrap();
        }
        let mut node = list.take_all();
        let mut count = 0;
        while let Some(record) = NonNull::new(node) {
            // SAFETY: as above; freed once, here.
            unsafe {
                node = IntrusiveStack::next(record);
                drop(Box::from_raw(record.as_ptr()));
            }
            count += 1;
        }
        assert_eq!(count, 2);
    });
}

/// Heap abandonment and adoption: an adopter sees every owner-only write of the thread
/// that abandoned the heap, and two adopters never both win.
#[test]
fn abandoned_heap_is_adopted_once_with_its_data() {
    loom::model(|| {
        let state = Arc::new(HeapState::new_owned());
        let data = Arc::new(UnsafeCell::new(0u64));
        let owner = {
            let state = Arc::clone(&state);
            let data = Arc::clone(&data);
            thread::spawn(move || {
                // SAFETY: the owner thread is the only user while OWNED.
                data.with_mut(|d| unsafe { *d = 42 });
                state.abandon();
            })
        };
        let adopters: Vec<_> = (0..2)
            .map(|_| {
                let state = Arc::clone(&state);
                let data = Arc::clone(&data);
                thread::spawn(move || {
                    if state.try_adopt() {
                        // SAFETY: adoption made this thread the only user.
                        data.with_mut(|d| unsafe {
                            assert_eq!(*d, 42);
                            *d = 43;
                        });
                        true
                    } else {
                        false
                    }
                })
            })
            .collect();
        owner.join().unwrap();
        let adopted: u32 = adopters.into_iter().map(|a| a.join().unwrap() as u32).sum();
        assert!(adopted <= 1);
        state.mark_dead();
        assert!(state.is_dead());
        state.abandon();
        assert!(state.is_dead(), "abandon leaves a DEAD heap DEAD");
        assert!(!state.try_adopt());
    });
}

/// Concurrent slab carving hands out disjoint slabs inside the region.
#[test]
fn bump_carves_disjoint_slabs() {
    loom::model(|| {
        // Four one-page (64-byte) carves race for the three pages after a header page.
        let bump = Arc::new(SlabBump::new(64, 4 * 64));
        let carvers: Vec<_> = (0..2)
            .map(|_| {
                let bump = Arc::clone(&bump);
                thread::spawn(move || [bump.carve(64), bump.carve(64)])
            })
            .collect();
        let mut got: Vec<usize> = carvers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .flatten()
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![64, 128, 192], "three slabs, each handed out once");
        assert!(!bump.has_room(64));
        assert_eq!(bump.carved_bytes(), 4 * 64);
    });
}

/// Concurrent reservations never exceed the limit, and a failure reports what was left.
#[test]
fn budget_never_exceeds_its_limit() {
    loom::model(|| {
        let budget = Arc::new(ByteBudget::new(Some(100)));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let budget = Arc::clone(&budget);
                thread::spawn(move || budget.try_reserve(60))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results.contains(&Err(40)));
        assert_eq!(budget.reserved_bytes(), 60);
        budget.release(60);
        assert_eq!(budget.available_bytes(), 100);
    });
}
