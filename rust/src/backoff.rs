//! The backoff scheduler: exponential backoff delays with jitter, and a timeline that holds items
//! until they are due.
//!
//! Three plain-Rust parts, wrapped by the thin `BackoffScheduler` pyclass at the end:
//! - [`BackoffPolicy`]: the delay formula, `d = min(max_delay, base * factor^(n-1))`, then jitter.
//! - [`RecentDelays`]: a bounded memory of each key's previous delay, for decorrelated jitter.
//! - [`Timeline`]: pending items keyed by string, popped in `(due, insertion)` order.
//!
//! The timeline is a 4-ary min-heap of `(due, seq, slot)` over a slab of live entries, with a
//! key → slot index. Re-scheduling or cancelling a key does not search the heap: it changes (or
//! frees) the slot, and the heap entry whose `seq` no longer matches its slot is stale and skipped
//! when it reaches the top. When stale entries outnumber live ones the heap is rebuilt, so
//! rescheduling one key forever keeps memory bounded. Every operation is O(log n) amortized.
//!
//! Randomness comes from `rand`'s `StdRng` (ChaCha12) rather than `SmallRng`: `SmallRng` is
//! Xoshiro256++ on 64-bit targets and Xoshiro128++ on 32-bit ones, so a seed would give different
//! jitter on different platforms. `StdRng` gives the same sequence for a seed on every platform
//! (for the `rand` version pinned by Cargo.lock), at a cost of a few nanoseconds per draw.

use hashbrown::hash_table::{self, HashTable};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use crate::errors::{check_duration, check_positive_duration};

/// How a computed delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// The delay itself.
    None,
    /// Uniform in `[0, d)`.
    Full,
    /// `d/2` plus uniform in `[0, d/2)`.
    Equal,
    /// `min(max_delay, uniform(base, 3 * previous delay))`.
    Decorrelated,
}

impl Jitter {
    /// The names accepted by [`Jitter::parse`], in the order error messages list them.
    pub const NAMES: [&'static str; 4] = ["none", "full", "equal", "decorrelated"];

    /// Parses a jitter mode name; the error names the bad value and the allowed ones.
    pub fn parse(name: &str) -> PyResult<Self> {
        match name {
            "none" => Ok(Self::None),
            "full" => Ok(Self::Full),
            "equal" => Ok(Self::Equal),
            "decorrelated" => Ok(Self::Decorrelated),
            _ => Err(PyValueError::new_err(format!(
                "BackoffScheduler(jitter) must be one of {}, got {name:?}",
                Self::NAMES.map(|n| format!("{n:?}")).join(", ")
            ))),
        }
    }
}

/// A validated backoff configuration: the delay formula without any state.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    base: f64,
    factor: f64,
    max_delay: f64,
    jitter: Jitter,
}

impl BackoffPolicy {
    /// Validates and builds a policy.
    ///
    /// `base` must be finite and > 0, `factor` finite and >= 1, `max_delay` finite and >= `base`.
    pub fn new(base: f64, factor: f64, max_delay: f64, jitter: Jitter) -> PyResult<Self> {
        check_positive_duration("BackoffScheduler(base)", base)?;
        if !factor.is_finite() || factor < 1.0 {
            return Err(PyValueError::new_err(format!(
                "BackoffScheduler(factor) must be a finite number >= 1, got {factor}"
            )));
        }
        check_duration("BackoffScheduler(max_delay)", max_delay)?;
        if max_delay < base {
            return Err(PyValueError::new_err(format!(
                "BackoffScheduler(max_delay) must be >= base ({base}), got {max_delay}"
            )));
        }
        Ok(Self {
            base,
            factor,
            max_delay,
            jitter,
        })
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The un-jittered delay of `attempt` (>= 1): `min(max_delay, base * factor^(attempt-1))`.
    ///
    /// Attempt 0 is treated as 1. A huge attempt gives `max_delay`: `powf` overflows to +inf,
    /// never NaN, because `base > 0` and `factor >= 1`, and the cap then applies.
    pub fn capped(&self, attempt: u64) -> f64 {
        let exponent = attempt.saturating_sub(1) as f64;
        let raw = self.base * self.factor.powf(exponent);
        if raw.is_finite() {
            raw.min(self.max_delay)
        } else {
            self.max_delay
        }
    }

    /// The jittered delay of `attempt`.
    ///
    /// `previous` is used by decorrelated jitter only: the previous delay of the same key, or
    /// `None` for "unknown", which means `base` (AWS's "decorrelated jitter" starts from `base`).
    /// Attempt 1 always starts from `base`, whatever `previous` says.
    pub fn jittered<R: Rng>(&self, attempt: u64, previous: Option<f64>, rng: &mut R) -> f64 {
        match self.jitter {
            Jitter::None => self.capped(attempt),
            Jitter::Full => self.capped(attempt) * unit(rng),
            Jitter::Equal => {
                let half = self.capped(attempt) / 2.0;
                half + half * unit(rng)
            }
            Jitter::Decorrelated => {
                let previous = match previous {
                    Some(p) if attempt > 1 => p.max(self.base),
                    _ => self.base,
                };
                // 3 * previous may overflow when max_delay is near f64::MAX; clamping keeps the
                // draw finite (and the cap below then applies) instead of producing inf * 0 = NaN.
                let high = (3.0 * previous).min(f64::MAX);
                let drawn = self.base + (high - self.base) * unit(rng);
                drawn.min(self.max_delay)
            }
        }
    }

    /// A keyless delay: decorrelated jitter takes as "previous" the un-jittered delay of
    /// `attempt - 1` (`base` for attempt 1).
    pub fn sample<R: Rng>(&self, attempt: u64, rng: &mut R) -> f64 {
        let previous = (attempt > 1).then(|| self.capped(attempt - 1));
        self.jittered(attempt, previous, rng)
    }
}

/// A uniform draw in `[0, 1)`. Computing `lo + (hi - lo) * unit` instead of `gen_range(lo..hi)`
/// cannot panic on an empty range (`lo == hi`, e.g. a zero delay).
#[inline]
fn unit<R: Rng>(rng: &mut R) -> f64 {
    rng.random::<f64>()
}

/// A bounded memory of the last delay given to each key, for decorrelated jitter.
///
/// Two generations: writes go to `young`; when `young` holds half the capacity it becomes `old`
/// and the previous `old` is dropped. So at most `capacity` keys are held, and at least the
/// `capacity / 2` most recently written keys are always remembered: an LRU approximation with
/// O(1) operations and no per-entry bookkeeping. A retry is scheduled after its previous entry was
/// popped, so the memory cannot be tied to pending entries.
#[derive(Debug)]
pub struct RecentDelays {
    young: HashMap<Arc<str>, f64>,
    old: HashMap<Arc<str>, f64>,
    half: usize,
}

impl RecentDelays {
    /// The number of keys the scheduler remembers (at most).
    pub const CAPACITY: usize = 65_536;

    /// Creates a memory of at most `capacity` keys (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            half: (capacity / 2).max(1),
        }
    }

    /// The last delay written for `key`, if still remembered.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.young.get(key).or_else(|| self.old.get(key)).copied()
    }

    /// Remembers `delay` as the last delay of `key`.
    pub fn put(&mut self, key: Arc<str>, delay: f64) {
        if self.young.len() >= self.half && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, delay);
    }

    /// Number of keys held, counting a key present in both generations twice.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A live entry of the timeline.
#[derive(Debug)]
struct Live<T> {
    key: Arc<str>,
    hash: u64,
    item: T,
    seq: u64,
}

/// A heap entry: ordered by `due`, then `seq` (insertion order).
#[derive(Debug, Clone, Copy)]
struct Pending {
    due: f64,
    seq: u64,
    slot: usize,
}

impl Pending {
    /// True when `self` comes out before `other`.
    #[inline]
    fn before(&self, other: &Self) -> bool {
        match self.due.total_cmp(&other.due) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.seq < other.seq,
        }
    }
}

/// A 4-ary min-heap of [`Pending`] entries.
///
/// With a million entries a binary heap's pop walks 20 levels, most of them cache misses; four
/// children per node halve the depth and the four children of a node sit side by side in memory,
/// which makes pops markedly faster at that size (std's `BinaryHeap` is binary only).
#[derive(Debug, Default)]
struct QuadHeap {
    v: Vec<Pending>,
}

impl QuadHeap {
    const ARITY: usize = 4;

    fn len(&self) -> usize {
        self.v.len()
    }

    fn peek(&self) -> Option<&Pending> {
        self.v.first()
    }

    fn push(&mut self, p: Pending) {
        self.v.push(p);
        self.sift_up(self.v.len() - 1);
    }

    fn pop(&mut self) -> Option<Pending> {
        let last = self.v.pop()?;
        match self.v.first_mut() {
            Some(top) => {
                let popped = std::mem::replace(top, last);
                self.sift_down(0);
                Some(popped)
            }
            None => Some(last),
        }
    }

    /// Keeps the entries for which `keep` is true, then restores the heap order in O(n).
    fn retain(&mut self, keep: impl FnMut(&Pending) -> bool) {
        self.v.retain(keep);
        let n = self.v.len();
        if n > 1 {
            for i in (0..=(n - 2) / Self::ARITY).rev() {
                self.sift_down(i);
            }
        }
    }

    fn clear(&mut self) {
        self.v.clear();
    }

    fn shrink_to(&mut self, min_capacity: usize) {
        self.v.shrink_to(min_capacity);
    }

    /// Moves the entry at `i` up to its place, shifting parents down through a hole.
    fn sift_up(&mut self, mut i: usize) {
        let x = self.v[i];
        while i > 0 {
            let parent = (i - 1) / Self::ARITY;
            if !x.before(&self.v[parent]) {
                break;
            }
            self.v[i] = self.v[parent];
            i = parent;
        }
        self.v[i] = x;
    }

    /// Moves the entry at `i` down to its place, shifting the earliest child up through a hole.
    fn sift_down(&mut self, mut i: usize) {
        let n = self.v.len();
        let x = self.v[i];
        loop {
            let first = Self::ARITY * i + 1;
            if first >= n {
                break;
            }
            let mut best = first;
            for c in first + 1..(first + Self::ARITY).min(n) {
                if self.v[c].before(&self.v[best]) {
                    best = c;
                }
            }
            if !self.v[best].before(&x) {
                break;
            }
            self.v[i] = self.v[best];
            i = best;
        }
        self.v[i] = x;
    }
}

/// Pending items keyed by string, popped in `(due, insertion)` order; one entry per key.
#[derive(Debug)]
pub struct Timeline<T> {
    heap: QuadHeap,
    slots: Vec<Option<Live<T>>>,
    free: Vec<usize>,
    /// `(hash of the key, slot)`. Keeping the hash in the table means growing it never reads a
    /// key, and a pop removes its key by slot without hashing or reading the key's text.
    index: HashTable<(u64, usize)>,
    hasher: RandomState,
    next_seq: u64,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Timeline<T> {
    /// Stale heap entries tolerated beyond the live count before a rebuild, so a small timeline
    /// is not rebuilt on every other reschedule.
    const STALE_SLACK: usize = 1024;

    /// Creates an empty timeline.
    pub fn new() -> Self {
        Self {
            heap: QuadHeap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            next_seq: 0,
        }
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when `key` has a pending entry.
    pub fn contains(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, Self::same_key(&self.slots, hash, key))
            .is_some()
    }

    /// Number of entries in the heap, stale ones included (for tests of compaction).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Schedules `item` under `key` at `due` (finite), replacing the key's pending entry.
    ///
    /// Returns the key's shared name (for other per-key tables) and the replaced item, which the
    /// caller drops after releasing any lock: dropping a Python object can run arbitrary code.
    pub fn insert(&mut self, key: &str, item: T, due: f64) -> (Arc<str>, Option<T>) {
        // -0.0 + 0.0 is +0.0: total_cmp orders -0.0 before 0.0, which would break ties by sign
        // instead of by insertion order.
        let due = due + 0.0;
        let seq = self.next_seq;
        self.next_seq += 1;
        let hash = self.hasher.hash_one(key);
        let entry = self
            .index
            .entry(hash, Self::same_key(&self.slots, hash, key), |&(h, _)| h);
        let (slot, name, replaced) = match entry {
            hash_table::Entry::Occupied(entry) => {
                let slot = entry.get().1;
                match self.slots.get_mut(slot) {
                    Some(Some(live)) => {
                        live.seq = seq;
                        let replaced = std::mem::replace(&mut live.item, item);
                        (slot, Arc::clone(&live.key), Some(replaced))
                    }
                    // The index points at a free slot: cannot happen, but recover by storing anew.
                    _ => {
                        let name: Arc<str> = Arc::from(key);
                        let live = Live {
                            key: Arc::clone(&name),
                            hash,
                            item,
                            seq,
                        };
                        let slot = Self::store(&mut self.slots, &mut self.free, live);
                        entry.into_mut().1 = slot;
                        (slot, name, None)
                    }
                }
            }
            hash_table::Entry::Vacant(entry) => {
                let name: Arc<str> = Arc::from(key);
                let live = Live {
                    key: Arc::clone(&name),
                    hash,
                    item,
                    seq,
                };
                let slot = Self::store(&mut self.slots, &mut self.free, live);
                entry.insert((hash, slot));
                (slot, name, None)
            }
        };
        self.heap.push(Pending { due, seq, slot });
        self.compact_if_stale();
        (name, replaced)
    }

    /// Removes the pending entry of `key` and returns its item.
    pub fn remove(&mut self, key: &str) -> Option<T> {
        let hash = self.hasher.hash_one(key);
        let entry = self
            .index
            .find_entry(hash, Self::same_key(&self.slots, hash, key))
            .ok()?;
        let ((_, slot), _) = entry.remove();
        let live = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.compact_if_stale();
        Some(live.item)
    }

    /// The earliest due time, or `None` when empty. Discards stale entries on top of the heap.
    pub fn next_due(&mut self) -> Option<f64> {
        self.skip_stale();
        self.heap.peek().map(|p| p.due)
    }

    /// Removes up to `max_items` entries due at `now` (`due <= now`), earliest first, appending
    /// their items to `out`.
    pub fn pop_due_into(&mut self, now: f64, max_items: usize, out: &mut Vec<T>) {
        let mut taken = 0;
        while taken < max_items {
            let Some(top) = self.heap.peek().copied() else {
                break;
            };
            if !self.is_live(&top) {
                self.heap.pop();
                continue;
            }
            if top.due > now {
                break;
            }
            self.heap.pop();
            if let Some(live) = self.slots.get_mut(top.slot).and_then(Option::take) {
                if let Ok(entry) = self.index.find_entry(live.hash, |&(_, s)| s == top.slot) {
                    entry.remove();
                }
                self.free.push(top.slot);
                out.push(live.item);
                taken += 1;
            }
        }
        if self.index.is_empty() {
            // Nothing live: drop the stale tail, and give back most of the memory of a past burst.
            self.heap.clear();
            self.slots.clear();
            self.free.clear();
            self.heap.shrink_to(Self::STALE_SLACK);
            self.slots.shrink_to(Self::STALE_SLACK);
            self.free.shrink_to(Self::STALE_SLACK);
            self.index.shrink_to(Self::STALE_SLACK, |&(h, _)| h);
        }
    }

    /// Stores a live entry in a free slot (or a new one) and returns the slot.
    fn store(slots: &mut Vec<Option<Live<T>>>, free: &mut Vec<usize>, live: Live<T>) -> usize {
        match free.pop() {
            Some(slot) if slot < slots.len() => {
                slots[slot] = Some(live);
                slot
            }
            _ => {
                slots.push(Some(live));
                slots.len() - 1
            }
        }
    }

    /// True when `slot` holds the live entry of `key`.
    #[inline]
    fn slot_has_key(slots: &[Option<Live<T>>], slot: usize, key: &str) -> bool {
        matches!(slots.get(slot), Some(Some(live)) if &*live.key == key)
    }

    /// The index's equality test for `key`: the stored hash first, so other keys' text is not read.
    fn same_key<'a>(
        slots: &'a [Option<Live<T>>],
        hash: u64,
        key: &'a str,
    ) -> impl FnMut(&(u64, usize)) -> bool + 'a {
        move |&(h, slot)| h == hash && Self::slot_has_key(slots, slot, key)
    }

    #[inline]
    fn is_live(&self, p: &Pending) -> bool {
        matches!(self.slots.get(p.slot), Some(Some(live)) if live.seq == p.seq)
    }

    fn skip_stale(&mut self) {
        while let Some(top) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap without stale entries once they outnumber live ones (plus some slack):
    /// the O(n) rebuild is paid for by the more than n stale-making operations before it.
    fn compact_if_stale(&mut self) {
        let live = self.index.len();
        if self.heap.len() > 2 * live + Self::STALE_SLACK {
            let slots = &self.slots;
            self.heap
                .retain(|p| matches!(slots.get(p.slot), Some(Some(live)) if live.seq == p.seq));
            self.heap.shrink_to(2 * live + Self::STALE_SLACK);
        }
    }
}

/// Everything behind the scheduler's lock.
struct State {
    rng: StdRng,
    recent: RecentDelays,
    timeline: Timeline<Py<PyAny>>,
}

/// Holds items until they are due; computes exponential backoff delays with jitter.
///
/// The delay for attempt n >= 1 is d = min(max_delay, base * factor**(n-1)), then jitter:
/// "none" -> d; "full" -> uniform(0, d); "equal" -> d/2 + uniform(0, d/2);
/// "decorrelated" -> min(max_delay, uniform(base, 3 * previous delay of that key)).
///
/// Decorrelated jitter remembers the last delay of up to 65,536 recently scheduled keys (at least
/// the 32,768 most recent); an unknown key, and attempt 1, start from `base`. `delay(attempt)`,
/// which has no key, uses the un-jittered delay of attempt - 1 as the previous delay.
///
/// Every method is O(log n) amortized and stays attached to the GIL; an internal lock makes the
/// scheduler safe to share between threads.
///
/// Args:
///     base: delay of attempt 1 before jitter, seconds, finite and > 0.
///     factor: growth per attempt, finite and >= 1.
///     max_delay: cap on every delay, seconds, finite and >= base.
///     jitter: "none", "full", "equal" or "decorrelated".
///     seed: makes the jitter reproducible (an int in [0, 2**64)); None seeds from the OS.
///
/// Raises:
///     ValueError: an argument is out of range; the message names it.
#[pyclass(frozen, module = "hulk._native", name = "BackoffScheduler")]
pub struct PyBackoffScheduler {
    policy: BackoffPolicy,
    state: Mutex<State>,
}

impl PyBackoffScheduler {
    /// Schedules under the lock and returns the replaced item, to be dropped after unlocking.
    fn insert(&self, key: &str, item: Py<PyAny>, due: f64) -> Option<Py<PyAny>> {
        let mut state = self.state.lock();
        state.timeline.insert(key, item, due).1
    }
}

#[pymethods]
impl PyBackoffScheduler {
    #[new]
    #[pyo3(signature = (*, base, factor=2.0, max_delay, jitter="full", seed=None))]
    fn new(
        base: f64,
        factor: f64,
        max_delay: f64,
        jitter: &str,
        seed: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let policy = BackoffPolicy::new(base, factor, max_delay, Jitter::parse(jitter)?)?;
        let rng = match seed {
            None => StdRng::from_os_rng(),
            Some(seed) => StdRng::seed_from_u64(extract_seed(seed)?),
        };
        Ok(Self {
            policy,
            state: Mutex::new(State {
                rng,
                recent: RecentDelays::new(RecentDelays::CAPACITY),
                timeline: Timeline::new(),
            }),
        })
    }

    /// Computes one delay for `attempt` (>= 1) without scheduling anything.
    ///
    /// Decorrelated jitter has no key here: it uses the un-jittered delay of `attempt - 1`
    /// (`base` for attempt 1) as the previous delay.
    fn delay(&self, attempt: &Bound<'_, PyAny>) -> PyResult<f64> {
        let attempt = extract_at_least_one("BackoffScheduler.delay(attempt)", attempt)?;
        let mut state = self.state.lock();
        Ok(self.policy.sample(attempt, &mut state.rng))
    }

    /// Schedules `item` under `key` after the backoff delay for `attempt`; returns its due time.
    ///
    /// Re-scheduling a key replaces its previous entry.
    #[pyo3(signature = (key, item, attempt, now=None))]
    fn schedule(
        &self,
        key: &str,
        item: Py<PyAny>,
        attempt: &Bound<'_, PyAny>,
        now: Option<f64>,
    ) -> PyResult<f64> {
        let attempt = extract_at_least_one("BackoffScheduler.schedule(attempt)", attempt)?;
        let now = check_finite("BackoffScheduler.schedule(now)", crate::clock::resolve(now))?;
        let (due, replaced) = {
            let mut state = self.state.lock();
            let state = &mut *state;
            if self.policy.jitter() == Jitter::Decorrelated {
                let delay = self
                    .policy
                    .jittered(attempt, state.recent.get(key), &mut state.rng);
                let due = now + delay;
                let (name, replaced) = state.timeline.insert(key, item, due);
                state.recent.put(name, delay);
                (due, replaced)
            } else {
                let due = now + self.policy.jittered(attempt, None, &mut state.rng);
                (due, state.timeline.insert(key, item, due).1)
            }
        };
        drop(replaced);
        Ok(due)
    }

    /// Schedules `item` under `key` at the absolute monotonic time `due` (finite).
    ///
    /// Re-scheduling a key replaces its previous entry.
    fn schedule_at(&self, key: &str, item: Py<PyAny>, due: f64) -> PyResult<()> {
        let due = check_finite("BackoffScheduler.schedule_at(due)", due)?;
        let replaced = self.insert(key, item, due);
        drop(replaced);
        Ok(())
    }

    /// Removes the entry of `key`; True if there was one.
    fn cancel(&self, key: &str) -> bool {
        let removed = self.state.lock().timeline.remove(key);
        removed.is_some()
    }

    /// Removes and returns the items due at `now` (due <= now), earliest first, at most
    /// `max_items` (>= 1). Ties are returned in scheduling order.
    // `max_items` is taken as an object so that a negative or huge int gets the same handling as
    // `attempt`; the text signature shows the real default.
    #[pyo3(
        signature = (now=None, max_items=None),
        text_signature = "($self, now=None, max_items=1024)"
    )]
    fn pop_due(
        &self,
        now: Option<f64>,
        max_items: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let max_items = match max_items {
            Some(n) => extract_at_least_one("BackoffScheduler.pop_due(max_items)", n)?,
            None => 1024,
        };
        let now = check_finite("BackoffScheduler.pop_due(now)", crate::clock::resolve(now))?;
        let limit = usize::try_from(max_items).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        self.state
            .lock()
            .timeline
            .pop_due_into(now, limit, &mut out);
        Ok(out)
    }

    /// The earliest due time, or None when empty.
    fn next_due(&self) -> Option<f64> {
        self.state.lock().timeline.next_due()
    }

    fn __len__(&self) -> usize {
        self.state.lock().timeline.len()
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        match key.cast::<PyString>() {
            Ok(key) => Ok(self.state.lock().timeline.contains(key.to_str()?)),
            Err(_) => Ok(false),
        }
    }
}

/// Checks that a time in seconds is finite (it may be negative: only order matters).
fn check_finite(what: &str, value: f64) -> PyResult<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a finite number of seconds, got {value}"
        )))
    }
}

/// Extracts an int >= 1. An int too large for u64 saturates (a huge attempt means `max_delay`);
/// any int below 1, however negative, is a ValueError rather than an OverflowError.
fn extract_at_least_one(what: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    match value.extract::<u64>() {
        Ok(0) => Err(PyValueError::new_err(format!("{what} must be >= 1, got 0"))),
        Ok(n) => Ok(n),
        Err(err) if err.is_instance_of::<PyOverflowError>(value.py()) => {
            if value.lt(0)? {
                Err(PyValueError::new_err(format!(
                    "{what} must be >= 1, got {value}"
                )))
            } else {
                Ok(u64::MAX)
            }
        }
        Err(err) => Err(err),
    }
}

/// Extracts a seed in `[0, 2**64)`; out-of-range ints are a ValueError naming the argument.
fn extract_seed(seed: &Bound<'_, PyAny>) -> PyResult<u64> {
    match seed.extract::<u64>() {
        Ok(seed) => Ok(seed),
        Err(err) if err.is_instance_of::<PyOverflowError>(seed.py()) => Err(PyValueError::new_err(
            format!("BackoffScheduler(seed) must be an int in [0, 2**64) or None, got {seed}"),
        )),
        Err(err) => Err(err),
    }
}

/// Adds `BackoffScheduler` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBackoffScheduler>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> BackoffPolicy {
        BackoffPolicy::new(0.5, 2.0, 10.0, jitter).unwrap()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn capped_delay_grows_then_stops_at_max_delay() {
        let p = policy(Jitter::None);
        let got: Vec<f64> = (1..=7).map(|n| p.capped(n)).collect();
        assert_eq!(got, vec![0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
        assert_eq!(p.capped(0), 0.5);
    }

    #[test]
    fn huge_attempts_give_max_delay_not_inf_or_nan() {
        let p = BackoffPolicy::new(1e-3, 1e300, f64::MAX, Jitter::Full).unwrap();
        for n in [2, 3, 1_000, u64::MAX] {
            let d = p.capped(n);
            assert!(d.is_finite(), "attempt {n}: {d}");
        }
        assert_eq!(p.capped(u64::MAX), f64::MAX);
        let p = policy(Jitter::None);
        assert_eq!(p.capped(u64::MAX), 10.0);
        let flat = BackoffPolicy::new(0.5, 1.0, 10.0, Jitter::None).unwrap();
        assert_eq!(flat.capped(u64::MAX), 0.5);
        let mut r = rng();
        let wide = BackoffPolicy::new(1.0, 2.0, f64::MAX, Jitter::Decorrelated).unwrap();
        for _ in 0..1_000 {
            let d = wide.jittered(u64::MAX, Some(f64::MAX), &mut r);
            assert!(d.is_finite() && d >= 1.0);
        }
    }

    #[test]
    fn no_jitter_is_the_capped_delay() {
        let p = policy(Jitter::None);
        let mut r = rng();
        for n in 1..20 {
            assert_eq!(p.sample(n, &mut r), p.capped(n));
        }
    }

    #[test]
    fn full_jitter_is_within_zero_and_d() {
        let p = policy(Jitter::Full);
        let mut r = rng();
        for n in 1..2_000u64 {
            let attempt = n % 8 + 1;
            let d = p.sample(attempt, &mut r);
            assert!((0.0..=p.capped(attempt)).contains(&d), "{attempt}: {d}");
        }
    }

    #[test]
    fn equal_jitter_is_within_half_d_and_d() {
        let p = policy(Jitter::Equal);
        let mut r = rng();
        for n in 1..2_000u64 {
            let attempt = n % 8 + 1;
            let cap = p.capped(attempt);
            let d = p.sample(attempt, &mut r);
            assert!(d >= cap / 2.0 && d <= cap, "{attempt}: {d}");
        }
    }

    #[test]
    fn decorrelated_jitter_is_within_base_and_three_times_previous() {
        let p = policy(Jitter::Decorrelated);
        let mut r = rng();
        let mut previous = None;
        for attempt in 1..2_000u64 {
            let d = p.jittered(attempt, previous, &mut r);
            let prev = if attempt == 1 {
                0.5
            } else {
                previous.unwrap_or(0.5)
            };
            assert!(d >= 0.5 && d <= (3.0 * prev).min(10.0), "{attempt}: {d}");
            previous = Some(d);
        }
        // Unknown previous and attempt 1 start from base.
        for _ in 0..1_000 {
            let d = p.jittered(5, None, &mut r);
            assert!((0.5..=1.5).contains(&d));
            let d = p.jittered(1, Some(9.0), &mut r);
            assert!((0.5..=1.5).contains(&d));
        }
        // Keyless: the previous delay is the un-jittered delay of attempt - 1.
        for _ in 0..1_000 {
            let d = p.sample(3, &mut r);
            assert!((0.5..=3.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn jitter_spreads_over_its_range() {
        let p = policy(Jitter::Full);
        let mut r = rng();
        let draws: Vec<f64> = (0..10_000).map(|_| p.sample(4, &mut r)).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 2.0).abs() < 0.1, "mean {mean}");
        assert!(draws.iter().any(|d| *d < 0.4) && draws.iter().any(|d| *d > 3.6));
    }

    #[test]
    fn a_seed_makes_jitter_reproducible() {
        let p = policy(Jitter::Full);
        let a: Vec<f64> = {
            let mut r = StdRng::seed_from_u64(42);
            (1..50).map(|n| p.sample(n, &mut r)).collect()
        };
        let b: Vec<f64> = {
            let mut r = StdRng::seed_from_u64(42);
            (1..50).map(|n| p.sample(n, &mut r)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn bad_policies_are_refused() {
        let j = Jitter::Full;
        assert!(BackoffPolicy::new(0.0, 2.0, 1.0, j).is_err());
        assert!(BackoffPolicy::new(-1.0, 2.0, 1.0, j).is_err());
        assert!(BackoffPolicy::new(f64::NAN, 2.0, 1.0, j).is_err());
        assert!(BackoffPolicy::new(f64::INFINITY, 2.0, f64::INFINITY, j).is_err());
        assert!(BackoffPolicy::new(1.0, 0.99, 1.0, j).is_err());
        assert!(BackoffPolicy::new(1.0, f64::NAN, 1.0, j).is_err());
        assert!(BackoffPolicy::new(1.0, f64::INFINITY, 1.0, j).is_err());
        assert!(BackoffPolicy::new(1.0, 2.0, 0.5, j).is_err());
        assert!(BackoffPolicy::new(1.0, 2.0, f64::INFINITY, j).is_err());
        assert!(BackoffPolicy::new(1.0, 1.0, 1.0, j).is_ok());
        assert!(Jitter::parse("fulll").is_err());
        for name in Jitter::NAMES {
            assert!(Jitter::parse(name).is_ok());
        }
    }

    #[test]
    fn recent_delays_are_bounded_and_keep_the_newest() {
        let mut m = RecentDelays::new(8);
        for i in 0..100 {
            m.put(Arc::from(format!("k{i}").as_str()), f64::from(i));
            assert!(m.len() <= 8);
        }
        for i in 96..100 {
            assert_eq!(m.get(&format!("k{i}")), Some(f64::from(i)));
        }
        assert_eq!(m.get("k0"), None);
        m.put(Arc::from("k99"), 1.5);
        assert_eq!(m.get("k99"), Some(1.5));
    }

    #[test]
    fn quad_heap_pops_in_order_and_retains() {
        let mut r = rng();
        let mut h = QuadHeap::default();
        let mut model: Vec<(f64, u64)> = Vec::new();
        for seq in 0..5_000u64 {
            // Few distinct dues, so ties (broken by seq) are common.
            let due = f64::from(r.random_range(0..50u32));
            h.push(Pending { due, seq, slot: 0 });
            model.push((due, seq));
            if seq % 3 == 0 {
                model.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let p = h.pop().unwrap();
                assert_eq!((p.due, p.seq), model.remove(0));
            }
        }
        h.retain(|p| p.seq % 2 == 0);
        model.retain(|e| e.1 % 2 == 0);
        model.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        assert_eq!(h.len(), model.len());
        for expected in model {
            let p = h.pop().unwrap();
            assert_eq!((p.due, p.seq), expected);
        }
        assert!(h.pop().is_none() && h.peek().is_none());
    }

    fn drain(t: &mut Timeline<u32>, now: f64) -> Vec<u32> {
        let mut out = Vec::new();
        t.pop_due_into(now, usize::MAX, &mut out);
        out
    }

    #[test]
    fn items_come_out_in_due_order_then_insertion_order() {
        let mut t = Timeline::new();
        t.insert("c", 3, 3.0);
        t.insert("a", 1, 1.0);
        t.insert("b1", 20, 2.0);
        t.insert("b2", 21, 2.0);
        t.insert("z", 0, -0.0);
        t.insert("zz", 9, 0.0);
        assert_eq!(t.next_due(), Some(0.0));
        assert_eq!(drain(&mut t, 0.5), vec![0, 9]);
        assert_eq!(drain(&mut t, 2.0), vec![1, 20, 21]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_due(), Some(3.0));
        assert_eq!(drain(&mut t, 10.0), vec![3]);
        assert!(t.is_empty());
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn max_items_limits_a_pop() {
        let mut t = Timeline::new();
        for i in 0..10 {
            t.insert(&format!("k{i}"), i, f64::from(i));
        }
        let mut out = Vec::new();
        t.pop_due_into(100.0, 3, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn rescheduling_a_key_replaces_its_entry() {
        let mut t = Timeline::new();
        t.insert("a", 1, 5.0);
        t.insert("b", 2, 6.0);
        let (name, replaced) = t.insert("a", 10, 7.0);
        assert_eq!(&*name, "a");
        assert_eq!(replaced, Some(1));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_due(), Some(6.0));
        assert_eq!(drain(&mut t, 100.0), vec![2, 10]);
        // Same due again: the reschedule counts as a new insertion for ties.
        t.insert("x", 1, 1.0);
        t.insert("y", 2, 1.0);
        t.insert("x", 3, 1.0);
        assert_eq!(drain(&mut t, 1.0), vec![2, 3]);
    }

    #[test]
    fn cancel_removes_only_that_key() {
        let mut t = Timeline::new();
        t.insert("a", 1, 1.0);
        t.insert("b", 2, 2.0);
        assert_eq!(t.remove("a"), Some(1));
        assert_eq!(t.remove("a"), None);
        assert_eq!(t.remove("nope"), None);
        assert!(!t.contains("a") && t.contains("b"));
        assert_eq!(t.next_due(), Some(2.0));
        t.insert("a", 3, 0.5);
        assert_eq!(drain(&mut t, 10.0), vec![3, 2]);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut t = Timeline::new();
        t.insert("other", 0, 1e9);
        for i in 0..100_000 {
            t.insert("hot", i, f64::from(i));
            assert!(t.heap_len() <= 2 * t.len() + Timeline::<u32>::STALE_SLACK + 1);
        }
        for i in 0..10_000 {
            let key = format!("c{i}");
            t.insert(&key, i, 5.0);
            t.remove(&key);
        }
        assert!(t.heap_len() <= 2 * t.len() + Timeline::<u32>::STALE_SLACK + 1);
        assert_eq!(t.len(), 2);
        assert_eq!(drain(&mut t, 1e10), vec![99_999, 0]);
    }

    #[test]
    fn holds_and_orders_a_million_items() {
        let n = 1_000_000u32;
        let mut t = Timeline::new();
        let mut r = rng();
        for i in 0..n {
            t.insert(&i.to_string(), i, r.random::<f64>() * 1000.0);
        }
        assert_eq!(t.len(), n as usize);
        let mut last = f64::NEG_INFINITY;
        let mut popped = 0;
        let mut out = Vec::new();
        while let Some(due) = t.next_due() {
            assert!(due >= last);
            last = due;
            out.clear();
            t.pop_due_into(due, 1024, &mut out);
            popped += out.len();
        }
        assert_eq!(popped, n as usize);
        assert!(t.is_empty());
    }

    #[test]
    fn slots_are_reused() {
        let mut t = Timeline::new();
        for round in 0..10 {
            for i in 0..100 {
                t.insert(&format!("k{i}"), i, f64::from(round));
            }
            assert_eq!(drain(&mut t, f64::from(round)).len(), 100);
        }
        t.insert("a", 1, 1.0);
        t.insert("b", 2, 1.0);
        t.remove("a");
        t.insert("c", 3, 1.0);
        assert!(t.slots.len() <= 2);
    }
}
