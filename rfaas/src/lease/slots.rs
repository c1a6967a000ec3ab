//! The lease's invocation slots: one state word per invocation id, changed with atomic
//! operations only, so that a call takes one compare-and-swap to claim its slot and one atomic
//! `and` to free it (a mutex section costs two atomic operations, and a call needed two sections).
//!
//! Ids are `worker * per_worker + slot`. A worker's slots are claimed only while the worker is
//! alive; [`Slots::fail_worker`] and [`Slots::claim`] agree through sequentially consistent
//! operations on both sides (a store and a load each), so every claim either sees the worker
//! dead or is seen by the scan that fails the worker's invocations: none is lost in flight.
//!
//! Each slot also counts its uses in an 8-bit *round*, kept in its state word: a claim moves
//! it on, and an answer counts only for the round it names (the invocation id on the wire
//! carries it, see [`tagged`]). A late duplicate of an earlier round's answer therefore neither
//! completes nor frees the slot's current invocation, unless it comes 256 claims later.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The state of one invocation slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Free,
    /// Submitted; the owner waits.
    InFlight,
    /// Answered: raw status (8 bits) and output length (at most the result area's).
    Done(u32, u32),
    /// The owner gave up (dropped or timed out); free the slot when the answer arrives.
    Abandoned,
    /// The worker's session died.
    Failed,
    /// Answered with more bytes (this many) than the invocation's result area holds: the
    /// executor broke the protocol, and the owner gets an error instead of the output.
    Rejected(u32),
}

const FREE: u64 = 0;
const IN_FLIGHT: u64 = 1;
const DONE: u64 = 2;
const ABANDONED: u64 = 3;
const FAILED: u64 = 4;
const REJECTED: u64 = 5;
const STATE_MASK: u64 = 0xff;
/// The round: bits 8 to 15 of a state word.
const ROUND_MASK: u64 = 0xff << 8;
/// Bits of an invocation id below its round: the slot index.
pub(super) const ROUND_SHIFT: u32 = 16;

/// The invocation id that names round `round` of slot `id` on the wire.
pub(super) fn tagged(id: u32, round: u32) -> u32 {
    id | (round << ROUND_SHIFT)
}

/// The slot index and round an invocation id names.
pub(super) fn untag(tagged: u32) -> (u32, u32) {
    (tagged & ((1 << ROUND_SHIFT) - 1), tagged >> ROUND_SHIFT)
}

fn round_of(word: u64) -> u32 {
    ((word & ROUND_MASK) >> 8) as u32
}

impl Slot {
    /// The state word in round `round`: the state in the low byte, the round in the next;
    /// `Done` keeps its status in the third byte and its length in the high half.
    fn word(self, round: u32) -> u64 {
        let state = match self {
            Slot::Free => FREE,
            Slot::InFlight => IN_FLIGHT,
            Slot::Done(raw, len) => (u64::from(len) << 32) | (u64::from(raw & 0xff) << 16) | DONE,
            Slot::Abandoned => ABANDONED,
            Slot::Failed => FAILED,
            Slot::Rejected(len) => (u64::from(len) << 32) | REJECTED,
        };
        state | (u64::from(round & 0xff) << 8)
    }

    fn from_word(w: u64) -> Slot {
        match w & STATE_MASK {
            FREE => Slot::Free,
            IN_FLIGHT => Slot::InFlight,
            DONE => Slot::Done(((w >> 16) & 0xff) as u32, (w >> 32) as u32),
            ABANDONED => Slot::Abandoned,
            REJECTED => Slot::Rejected((w >> 32) as u32),
            // Only this module writes the words: FAILED is the one tag left.
            _ => Slot::Failed,
        }
    }
}

/// What became of an answer (see [`Slots::deliver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// The slot holds it now: wake its owner.
    ToOwner,
    /// Its owner had given the slot up: the slot is free again; whether tasks wait for one.
    Freed(bool),
    /// It lost a race with its worker's end: it was taken off the queue before the end was
    /// reported, and the slot had moved on since (its owner took the failure, or the slot,
    /// abandoned, was freed with the worker). Nobody's answer, and no fault of the executor's.
    AfterEnd,
    /// No invocation of a live worker waits for it: a duplicate, or a stray (a violation).
    Stray,
}

/// What [`Slots::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// Slot `id` of `worker`, now in flight in round `round`.
    Got { worker: usize, id: u32, round: u32 },
    /// Every live worker's slots are in use.
    Busy,
    /// Every worker is dead.
    AllDead,
}

pub(super) struct Slots {
    cells: Box<[AtomicU64]>,
    dead: Box<[AtomicBool]>,
    per_worker: u32,
    /// Where the next claim starts looking (invocations are spread over the workers).
    next_worker: AtomicUsize,
    /// Registered waiters for a free slot (see [`Slots::wait_for_free`]).
    waiting: AtomicUsize,
}

impl Slots {
    pub(super) fn new(workers: u32, per_worker: u32) -> Slots {
        let n = workers as usize * per_worker as usize;
        Slots {
            cells: (0..n).map(|_| AtomicU64::new(FREE)).collect(),
            dead: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            per_worker,
            next_worker: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    fn workers(&self) -> usize {
        self.dead.len()
    }

    /// Claims a free slot of a live worker, starting at the worker after the last one used.
    pub(super) fn claim(&self) -> Claim {
        let n = self.workers();
        let start = self.next_worker.load(Ordering::Relaxed);
        for k in 0..n {
            let mut w = start + k;
            if w >= n {
                w -= n;
            }
            if self.dead[w].load(Ordering::Acquire) {
                continue;
            }
            let base = w as u32 * self.per_worker;
            for id in base..base + self.per_worker {
                let cell = &self.cells[id as usize];
                let free = cell.load(Ordering::Relaxed);
                if free & STATE_MASK != FREE {
                    continue;
                }
                let round = (round_of(free) + 1) & 0xff;
                if cell
                    .compare_exchange(
                        free,
                        Slot::InFlight.word(round),
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    )
                    .is_err()
                {
                    continue;
                }
                // Pairs with `fail_worker`'s store and scan: either we see the worker dead
                // here, or its scan sees our claim and fails it.
                if self.dead[w].load(Ordering::SeqCst) {
                    cell.store(free, Ordering::Release);
                    break;
                }
                self.next_worker
                    .store(if w + 1 == n { 0 } else { w + 1 }, Ordering::Relaxed);
                return Claim::Got {
                    worker: w,
                    id,
                    round,
                };
            }
        }
        if self.dead.iter().all(|d| d.load(Ordering::Acquire)) {
            Claim::AllDead
        } else {
            Claim::Busy
        }
    }

    pub(super) fn get(&self, id: u32) -> Slot {
        Slot::from_word(self.cells[id as usize].load(Ordering::Acquire))
    }

    /// Frees slot `id` (its owner is done with it). Returns whether tasks wait for a free slot
    /// (the caller wakes them).
    #[must_use]
    pub(super) fn release(&self, id: u32) -> bool {
        // A read-modify-write (sequentially consistent) so that the waiter count below is read
        // after the slot is seen free: pairs with `wait_for_free`. Free keeps the round.
        self.cells[id as usize].fetch_and(ROUND_MASK, Ordering::SeqCst);
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Frees slot `id` if its owner abandoned it in `round` (that round's answer came); `None`
    /// if it was not (a duplicate answer, or one of an earlier round). Else, like
    /// [`Slots::release`], whether tasks wait for a free slot.
    pub(super) fn reclaim(&self, id: u32, round: u32) -> Option<bool> {
        self.cells[id as usize]
            .compare_exchange(
                Slot::Abandoned.word(round),
                Slot::Free.word(round),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.waiting.load(Ordering::SeqCst) > 0)
    }

    /// Moves `id` from `from` to `to` if it is in round `round`; else the state found (in
    /// whichever round).
    pub(super) fn transition(&self, id: u32, round: u32, from: Slot, to: Slot) -> Result<(), Slot> {
        self.cells[id as usize]
            .compare_exchange(
                from.word(round),
                to.word(round),
                Ordering::SeqCst,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Slot::from_word)
    }

    /// Hands answer `answer` (`Done` or `Rejected`) of round `round` to slot `id` (an index
    /// below the slot count), which must be in flight in that round; or, if its worker is
    /// gone, still failed. An abandoned slot is freed by it instead.
    pub(super) fn deliver(&self, id: u32, round: u32, answer: Slot) -> Delivery {
        let outcome = match self.transition(id, round, Slot::InFlight, answer) {
            Ok(()) => Some(Delivery::ToOwner),
            Err(Slot::Abandoned) => self.reclaim(id, round).map(Delivery::Freed),
            // The worker's end was reported while this answer was on its way (another thread
            // had taken it off the queue): the answer wins if the owner has not taken the
            // failure yet.
            Err(Slot::Failed) => self
                .transition(id, round, Slot::Failed, answer)
                .ok()
                .map(|()| Delivery::ToOwner),
            Err(_) => None,
        };
        // Anything that found the slot moved on: on a dead worker it raced the death (a dead
        // worker's slots are never claimed again, and its queue reports the end only after
        // the answers it holds, so this answer was on its way already); else a stray.
        outcome.unwrap_or_else(|| {
            if self.is_dead((id / self.per_worker) as usize) {
                Delivery::AfterEnd
            } else {
                Delivery::Stray
            }
        })
    }

    /// Marks a slot of a dead worker unused (it is never claimed again).
    pub(super) fn clear(&self, id: u32) {
        self.cells[id as usize].fetch_and(ROUND_MASK, Ordering::Release);
    }

    pub(super) fn is_dead(&self, worker: usize) -> bool {
        self.dead[worker].load(Ordering::Acquire)
    }

    /// Marks `worker` dead and fails its invocations in flight (abandoned ones are freed).
    /// Calls `failed` with each failed id; returns false if the worker was already dead or
    /// does not exist.
    pub(super) fn fail_worker(&self, worker: usize, mut failed: impl FnMut(u32)) -> bool {
        if worker >= self.workers() || self.dead[worker].swap(true, Ordering::SeqCst) {
            return false;
        }
        let base = worker as u32 * self.per_worker;
        for id in base..base + self.per_worker {
            let cell = &self.cells[id as usize];
            let mut cur = cell.load(Ordering::SeqCst);
            loop {
                let next = (cur & ROUND_MASK)
                    | match cur & STATE_MASK {
                        IN_FLIGHT => FAILED,
                        ABANDONED => FREE,
                        _ => break,
                    };
                match cell.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => {
                        if next & STATE_MASK == FAILED {
                            failed(id);
                        }
                        break;
                    }
                    Err(now) => cur = now,
                }
            }
        }
        true
    }

    /// Registers a waiter for a free slot; true if one is free already, or every worker is
    /// dead (then the caller need not sleep: its next claim says so). Pairs with
    /// [`Slots::release`]: a slot freed after this call finds the count raised, one freed
    /// before it is seen here.
    pub(super) fn wait_for_free(&self) -> bool {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.free_or_all_dead()
    }

    /// Whether a slot of a live worker is free now, or every worker is dead.
    pub(super) fn free_or_all_dead(&self) -> bool {
        let mut all_dead = true;
        for w in 0..self.workers() {
            if self.dead[w].load(Ordering::SeqCst) {
                continue;
            }
            all_dead = false;
            let base = w * self.per_worker as usize;
            if self.cells[base..base + self.per_worker as usize]
                .iter()
                .any(|c| c.load(Ordering::SeqCst) & STATE_MASK == FREE)
            {
                return true;
            }
        }
        all_dead
    }

    /// The registered waiters were all woken (call with the waiters' list locked).
    pub(super) fn waiters_woken(&self) {
        self.waiting.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn words_round_trip_every_state() {
        for s in [
            Slot::Free,
            Slot::InFlight,
            Slot::Done(0, 0),
            Slot::Done(0xff, u32::MAX),
            Slot::Done(3, 12345),
            Slot::Abandoned,
            Slot::Failed,
            Slot::Rejected(0),
            Slot::Rejected(u32::MAX),
        ] {
            for round in [0, 1, 0x80, 0xff] {
                let w = s.word(round);
                assert_eq!(Slot::from_word(w), s);
                assert_eq!(round_of(w), round);
            }
        }
        for (id, round) in [(0, 0), (65535, 255), (7, 3)] {
            assert_eq!(untag(tagged(id, round)), (id, round));
            assert!(tagged(id, round) <= crate::wire::MAX_INVOCATION_ID);
        }
    }

    #[test]
    fn claims_spread_over_workers_until_busy_then_release_frees() {
        let s = Slots::new(2, 2);
        let mut got = Vec::new();
        for _ in 0..4 {
            match s.claim() {
                Claim::Got { worker, id, round } => {
                    assert_eq!(round, 1, "a fresh slot's first round");
                    got.push((worker, id))
                }
                other => panic!("expected a slot, got {other:?}"),
            }
        }
        // Alternating workers, each id once, each in its worker's range.
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 0, 1]);
        let mut ids: Vec<u32> = got.iter().map(|g| g.1).collect();
        ids.sort();
        assert_eq!(ids, [0, 1, 2, 3]);
        assert!(got.iter().all(|&(w, id)| id / 2 == w as u32));
        assert_eq!(s.claim(), Claim::Busy);
        assert!(!s.wait_for_free());
        assert!(s.release(got[2].1), "a waiter is registered");
        s.waiters_woken();
        assert_eq!(
            s.claim(),
            Claim::Got {
                worker: got[2].0,
                id: got[2].1,
                round: 2
            }
        );
    }

    #[test]
    fn dead_workers_fail_in_flight_free_abandoned_and_are_skipped() {
        let s = Slots::new(2, 2);
        // Worker 0: slot 0 in flight, slot 1 abandoned.
        let got = |worker, id| Claim::Got {
            worker,
            id,
            round: 1,
        };
        assert_eq!(s.claim(), got(0, 0));
        assert_eq!(s.claim(), got(1, 2));
        assert_eq!(s.claim(), got(0, 1));
        s.transition(1, 1, Slot::InFlight, Slot::Abandoned).unwrap();
        let mut failed = Vec::new();
        assert!(s.fail_worker(0, |id| failed.push(id)));
        assert!(!s.fail_worker(0, |_| panic!("already dead")));
        assert!(!s.fail_worker(7, |_| panic!("no such worker")));
        assert_eq!(failed, [0]);
        assert_eq!(s.get(0), Slot::Failed);
        assert_eq!(s.get(1), Slot::Free);
        assert_eq!(s.get(2), Slot::InFlight);
        // Only worker 1's last slot is left.
        assert_eq!(s.claim(), got(1, 3));
        assert_eq!(s.claim(), Claim::Busy);
        let _ = s.release(3);
        assert!(s.fail_worker(1, |_| {}));
        assert_eq!(s.claim(), Claim::AllDead);
        // A task waiting for a slot need not sleep: its next claim learns that all are dead.
        assert!(s.wait_for_free());
    }

    #[test]
    fn answers_and_abandonment_race_to_one_outcome() {
        let s = Slots::new(1, 1);
        assert!(matches!(s.claim(), Claim::Got { round: 1, .. }));
        s.transition(0, 1, Slot::InFlight, Slot::Done(1, 8))
            .unwrap();
        assert_eq!(
            s.transition(0, 1, Slot::InFlight, Slot::Abandoned),
            Err(Slot::Done(1, 8))
        );
    }

    /// An answer that loses the race with its worker's end (taken off the queue by one thread
    /// while another reported the end) is late, not a violation, whether the owner already took
    /// the failure or the slot was abandoned and freed with the worker; before the owner takes
    /// the failure it is still delivered. The same answer on a live worker is a stray.
    #[test]
    fn an_answer_that_loses_to_its_workers_end_is_late_not_stray() {
        let s = Slots::new(3, 1);
        for w in 0..3 {
            assert!(matches!(s.claim(), Claim::Got { worker, round: 1, .. } if worker == w));
        }
        // Worker 0: failed, the owner took the failure (a dead worker's slot is cleared).
        assert!(s.fail_worker(0, |_| {}));
        s.clear(0);
        assert_eq!(s.deliver(0, 1, Slot::Done(0, 0)), Delivery::AfterEnd);
        // Worker 1: abandoned, then freed by the worker's end.
        s.transition(1, 1, Slot::InFlight, Slot::Abandoned).unwrap();
        assert!(s.fail_worker(1, |_| {}));
        assert_eq!(s.deliver(1, 1, Slot::Done(0, 0)), Delivery::AfterEnd);
        // Worker 2, alive: its owner is done; a second answer is a stray.
        assert_eq!(s.deliver(2, 1, Slot::Done(0, 8)), Delivery::ToOwner);
        let _ = s.release(2);
        assert_eq!(s.deliver(2, 1, Slot::Done(0, 8)), Delivery::Stray);
        // Worker 2 dies with a call in flight whose owner has not looked yet: the answer wins.
        assert!(matches!(
            s.claim(),
            Claim::Got {
                id: 2,
                round: 2,
                ..
            }
        ));
        assert!(s.fail_worker(2, |_| {}));
        assert_eq!(s.deliver(2, 2, Slot::Rejected(9)), Delivery::ToOwner);
        assert_eq!(s.get(2), Slot::Rejected(9));
        // An abandoned slot of a live worker is freed by its answer, once.
        let s = Slots::new(1, 1);
        assert!(matches!(s.claim(), Claim::Got { round: 1, .. }));
        s.transition(0, 1, Slot::InFlight, Slot::Abandoned).unwrap();
        assert_eq!(s.deliver(0, 1, Slot::Done(0, 0)), Delivery::Freed(false));
        assert_eq!(s.deliver(0, 1, Slot::Done(0, 0)), Delivery::Stray);
    }

    /// An abandoned slot is freed by its answer once; a duplicate answer frees nothing, even
    /// after the slot went to another invocation.
    #[test]
    fn a_duplicate_answer_frees_nothing() {
        let s = Slots::new(1, 1);
        assert!(matches!(s.claim(), Claim::Got { round: 1, .. }));
        s.transition(0, 1, Slot::InFlight, Slot::Abandoned).unwrap();
        assert_eq!(s.reclaim(0, 1), Some(false));
        assert_eq!(s.get(0), Slot::Free);
        assert!(matches!(s.claim(), Claim::Got { round: 2, .. }));
        assert_eq!(s.reclaim(0, 1), None);
        assert_eq!(s.get(0), Slot::InFlight);
        assert_eq!(s.claim(), Claim::Busy);
    }

    /// A late answer of an earlier round neither completes nor frees the slot's current
    /// invocation, whether it is in flight or abandoned; rounds wrap after 255.
    #[test]
    fn answers_of_an_earlier_round_change_nothing() {
        let s = Slots::new(1, 1);
        assert!(matches!(s.claim(), Claim::Got { round: 1, .. }));
        let _ = s.release(0);
        assert!(matches!(s.claim(), Claim::Got { round: 2, .. }));
        assert_eq!(
            s.transition(0, 1, Slot::InFlight, Slot::Done(0, 0)),
            Err(Slot::InFlight)
        );
        s.transition(0, 2, Slot::InFlight, Slot::Abandoned).unwrap();
        assert_eq!(s.reclaim(0, 1), None);
        assert_eq!(s.get(0), Slot::Abandoned);
        assert_eq!(s.reclaim(0, 2), Some(false));
        for round in 3..=255 {
            assert_eq!(
                s.claim(),
                Claim::Got {
                    worker: 0,
                    id: 0,
                    round
                }
            );
            let _ = s.release(0);
        }
        assert!(matches!(s.claim(), Claim::Got { round: 0, .. }));
        // A dead worker's slot keeps its round too: only that round's answer, arriving after
        // the death was reported, may still complete it.
        assert!(s.fail_worker(0, |_| {}));
        assert_eq!(
            s.transition(0, 255, Slot::Failed, Slot::Done(0, 0)),
            Err(Slot::Failed)
        );
        s.transition(0, 0, Slot::Failed, Slot::Done(0, 0)).unwrap();
        assert_eq!(s.get(0), Slot::Done(0, 0));
    }

    /// Claims racing with the worker's death: a claim that succeeds while the worker dies is
    /// failed by the death's scan (none is left in flight on a dead worker, unseen).
    #[test]
    fn no_claim_survives_unseen_on_a_dead_worker() {
        let mut raced = 0;
        for round in 0..2000 {
            let s = Arc::new(Slots::new(1, 1));
            let claimer = {
                let s = s.clone();
                std::thread::spawn(move || {
                    loop {
                        match s.claim() {
                            // Claimed while the worker was dying: keep it for the check.
                            Claim::Got { id, .. } if s.is_dead(0) => return Some(id),
                            Claim::Got { id, .. } => {
                                let _ = s.release(id);
                            }
                            Claim::Busy | Claim::AllDead => return None,
                        }
                    }
                })
            };
            for _ in 0..(round % 64) * 16 {
                std::hint::spin_loop();
            }
            let mut failed = Vec::new();
            assert!(s.fail_worker(0, |id| failed.push(id)));
            if let Some(id) = claimer.join().unwrap() {
                raced += 1;
                assert_eq!(s.get(id), Slot::Failed, "round {round}");
                assert_eq!(failed, [id]);
            }
            assert_eq!(s.claim(), Claim::AllDead);
        }
        eprintln!("{raced} of 2000 rounds claimed a slot as its worker died");
    }
}
