//! `BoundedQueue`: a lock-free bounded MPMC FIFO of Python objects.
//!
//! The fast path (`try_push`, `try_pop`, `push_many`, `pop_many`) is crossbeam's `ArrayQueue` plus
//! a few atomics, with no lock. Blocked `push`/`pop` calls park on a parking_lot `Condvar`, and
//! asyncio consumers register one-shot wakers; the fast path touches that lock only when an atomic
//! waiter count says someone may be waiting, so a push with no waiter costs one extra atomic load.
//!
//! No lost wake-up: a waiter increments its count (SeqCst) and then re-checks the queue (SeqCst
//! loads of its head and tail); a push advances the tail with a SeqCst CAS (crossbeam's
//! `ArrayQueue` does, as does its pop for the head) and then loads the count (SeqCst). In the single
//! total order of SeqCst operations one of the two comes first, so either the waiter's re-check sees
//! the item or the pusher sees the waiter. The waiter increments and parks under the mutex, and the
//! pusher takes the mutex before notifying, so the notification cannot slip in between the
//! waiter's re-check and its park.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::counters::AtomicCounter;
use crate::errors::{check_count, check_duration, queue_full, QueueClosed, QueueEmpty};

/// The largest capacity accepted: the ring is allocated up front (16 bytes a slot), so a typo such
/// as `10**12` must fail with a ValueError instead of aborting the process on allocation.
pub const MAX_CAPACITY: usize = 1 << 26;

/// How often a blocked call on the main thread wakes to run Python's signal handlers (Ctrl-C).
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Keeps a hot atomic on its own cache line (128 bytes: x86 prefetches lines in pairs), so
/// producers and consumers do not invalidate each other's lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Why a push refused its item; the item is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// No room left.
    Full(T),
    /// The queue is closed.
    Closed(T),
}

/// Why a non-blocking pop returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopError {
    /// No item now; one may come later.
    Empty,
    /// Closed and drained: no item will ever come.
    Closed,
}

/// Why a blocking call gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The queue is closed (for a pop: closed and drained).
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// The queue was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A snapshot of the queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Items accepted.
    pub pushed: u64,
    /// Items removed.
    pub popped: u64,
    /// Items refused because the queue was full.
    pub rejected: u64,
}

/// The queue's algorithm in plain Rust, generic over the item `T` and the one-shot waker `W` that
/// a push or `close` hands back to its caller to run (Python callables in the binding).
#[derive(Debug)]
pub struct Core<T, W> {
    items: ArrayQueue<T>,
    closed: AtomicBool,
    /// Parked pops plus registered wakers; loaded by every push.
    pop_waiters: Padded<AtomicUsize>,
    /// Parked pushes; loaded by every pop.
    push_waiters: Padded<AtomicUsize>,
    pushed: Padded<AtomicCounter>,
    popped: Padded<AtomicCounter>,
    rejected: AtomicCounter,
    /// The waiting side only: the wakers, and the lock that parked callers wait on.
    wakers: Mutex<Vec<W>>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl<T, W> Core<T, W> {
    /// Creates an empty queue; None when `capacity` is 0 or above `MAX_CAPACITY`.
    pub fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return None;
        }
        Some(Self {
            items: ArrayQueue::new(capacity),
            closed: AtomicBool::new(false),
            pop_waiters: Padded::default(),
            push_waiters: Padded::default(),
            pushed: Padded::default(),
            popped: Padded::default(),
            rejected: AtomicCounter::default(),
            wakers: Mutex::new(Vec::new()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        })
    }

    /// Maximum number of items.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Number of items now (a snapshot under concurrency).
    #[inline]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the queue holds no item now.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True once `close` was called.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Appends `item` without counting a refusal; the caller runs the returned wakers.
    #[inline]
    pub fn offer(&self, item: T) -> Result<Vec<W>, PushError<T>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed(item));
        }
        match self.items.push(item) {
            Ok(()) => {
                self.pushed.0.add(1);
                Ok(self.after_push(1))
            }
            Err(item) => Err(PushError::Full(item)),
        }
    }

    /// Appends `item`; a refusal for lack of room is counted as rejected.
    #[inline]
    pub fn try_push(&self, item: T) -> Result<Vec<W>, PushError<T>> {
        let result = self.offer(item);
        if let Err(PushError::Full(_)) = result {
            self.rejected.add(1);
        }
        result
    }

    /// Counts one item refused for lack of room (a blocking push that timed out).
    #[inline]
    pub fn count_rejected(&self) {
        self.rejected.add(1);
    }

    /// Removes the oldest item.
    #[inline]
    pub fn try_pop(&self) -> Result<T, PopError> {
        if let Some(item) = self.pop_one() {
            return Ok(item);
        }
        if !self.closed.load(Ordering::SeqCst) {
            return Err(PopError::Empty);
        }
        // A push that passed its closed check before `close` may have landed since the first try.
        self.pop_one().ok_or(PopError::Closed)
    }

    /// Appends items in order until full; returns how many were accepted and the wakers to run.
    /// The items that did not fit are dropped and counted as rejected.
    pub fn push_many<I>(&self, items: I) -> Result<(usize, Vec<W>), Closed>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: ExactSizeIterator,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(Closed);
        }
        let mut items = items.into_iter();
        let total = items.len();
        let mut accepted = 0;
        for item in items.by_ref() {
            if self.items.push(item).is_err() {
                break;
            }
            accepted += 1;
        }
        if accepted < total {
            self.rejected.add((total - accepted) as u64);
        }
        if accepted == 0 {
            return Ok((0, Vec::new()));
        }
        self.pushed.0.add(accepted as u64);
        Ok((accepted, self.after_push(accepted)))
    }

    /// Moves up to `max_items` items into `out`, oldest first; returns how many.
    /// Err(Closed) only when none was moved and the queue is closed and drained.
    pub fn pop_many(&self, max_items: usize, out: &mut Vec<T>) -> Result<usize, Closed> {
        let mut n = 0;
        while n < max_items {
            match self.items.pop() {
                Some(item) => {
                    out.push(item);
                    n += 1;
                }
                None => break,
            }
        }
        if n == 0 {
            return match self.try_pop() {
                Ok(item) => {
                    out.push(item);
                    Ok(1)
                }
                Err(PopError::Empty) => Ok(0),
                Err(PopError::Closed) => Err(Closed),
            };
        }
        self.popped.0.add(n as u64);
        self.after_pop(n);
        Ok(n)
    }

    /// Appends `item`, parking until there is room, the queue closes, or `deadline` passes
    /// (None: no deadline). Does not count a refusal: the caller decides whether a timeout is final.
    pub fn push_until(&self, item: T, deadline: Option<Instant>) -> Result<Vec<W>, (T, WaitError)> {
        let mut item = item;
        loop {
            match self.offer(item) {
                Ok(wakers) => return Ok(wakers),
                Err(PushError::Closed(back)) => return Err((back, WaitError::Closed)),
                Err(PushError::Full(back)) => item = back,
            }
            let mut guard = self.wakers.lock();
            self.push_waiters.0.fetch_add(1, Ordering::SeqCst);
            if !self.items.is_full() || self.closed.load(Ordering::SeqCst) {
                self.push_waiters.0.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let timed_out = match deadline {
                Some(deadline) => self.not_full.wait_until(&mut guard, deadline).timed_out(),
                None => {
                    self.not_full.wait(&mut guard);
                    false
                }
            };
            self.push_waiters.0.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            if timed_out {
                return match self.offer(item) {
                    Ok(wakers) => Ok(wakers),
                    Err(PushError::Closed(back)) => Err((back, WaitError::Closed)),
                    Err(PushError::Full(back)) => Err((back, WaitError::TimedOut)),
                };
            }
        }
    }

    /// Removes the oldest item, parking until one comes, the queue is closed and drained, or
    /// `deadline` passes (None: no deadline).
    pub fn pop_until(&self, deadline: Option<Instant>) -> Result<T, WaitError> {
        loop {
            match self.try_pop() {
                Ok(item) => return Ok(item),
                Err(PopError::Closed) => return Err(WaitError::Closed),
                Err(PopError::Empty) => {}
            }
            let mut guard = self.wakers.lock();
            self.pop_waiters.0.fetch_add(1, Ordering::SeqCst);
            if !self.items.is_empty() || self.closed.load(Ordering::SeqCst) {
                self.pop_waiters.0.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let timed_out = match deadline {
                Some(deadline) => self.not_empty.wait_until(&mut guard, deadline).timed_out(),
                None => {
                    self.not_empty.wait(&mut guard);
                    false
                }
            };
            self.pop_waiters.0.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            if timed_out {
                return self.try_pop().map_err(|e| match e {
                    PopError::Empty => WaitError::TimedOut,
                    PopError::Closed => WaitError::Closed,
                });
            }
        }
    }

    /// Registers a one-shot waker handed back by the next push or `close`. Refuses it (handing it
    /// back) when the queue is non-empty or closed, so the caller pops again instead of waiting.
    pub fn add_waiter(&self, waker: W) -> Result<(), W> {
        if self.closed.load(Ordering::SeqCst) || !self.items.is_empty() {
            return Err(waker);
        }
        let mut wakers = self.wakers.lock();
        wakers.push(waker);
        self.pop_waiters.0.fetch_add(1, Ordering::SeqCst);
        // Re-check after counting ourselves in: a push that came first did not see the count.
        if self.closed.load(Ordering::SeqCst) || !self.items.is_empty() {
            self.pop_waiters.0.fetch_sub(1, Ordering::SeqCst);
            // The lock is held since the push above, so the last waker is ours.
            return match wakers.pop() {
                Some(waker) => Err(waker),
                None => Ok(()),
            };
        }
        Ok(())
    }

    /// Closes the queue: parked callers wake, later pushes fail, remaining items stay poppable.
    /// Returns the registered wakers for the caller to run.
    pub fn close(&self) -> Vec<W> {
        self.closed.store(true, Ordering::SeqCst);
        let mut guard = self.wakers.lock();
        let wakers = std::mem::take(&mut *guard);
        self.pop_waiters.0.fetch_sub(wakers.len(), Ordering::SeqCst);
        self.not_empty.notify_all();
        self.not_full.notify_all();
        wakers
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        Stats {
            pushed: self.pushed.0.get(),
            popped: self.popped.0.get(),
            rejected: self.rejected.get(),
        }
    }

    #[inline]
    fn pop_one(&self) -> Option<T> {
        let item = self.items.pop()?;
        self.popped.0.add(1);
        self.after_pop(1);
        Some(item)
    }

    /// Wakes pops after `n` items were pushed; the one SeqCst load is all a push pays with no waiter.
    #[inline]
    fn after_push(&self, n: usize) -> Vec<W> {
        if self.pop_waiters.0.load(Ordering::SeqCst) == 0 {
            return Vec::new();
        }
        self.wake_pops(n)
    }

    #[cold]
    fn wake_pops(&self, n: usize) -> Vec<W> {
        let mut guard = self.wakers.lock();
        let wakers = std::mem::take(&mut *guard);
        self.pop_waiters.0.fetch_sub(wakers.len(), Ordering::SeqCst);
        if n == 1 {
            self.not_empty.notify_one();
        } else {
            self.not_empty.notify_all();
        }
        wakers
    }

    #[inline]
    fn after_pop(&self, n: usize) {
        if self.push_waiters.0.load(Ordering::SeqCst) != 0 {
            self.wake_pushes(n);
        }
    }

    #[cold]
    fn wake_pushes(&self, n: usize) {
        let _guard = self.wakers.lock();
        if n == 1 {
            self.not_full.notify_one();
        } else {
            self.not_full.notify_all();
        }
    }
}

// --- Python binding ------------------------------------------------------------------------------

/// Lock-free bounded MPMC FIFO of Python objects (crossbeam ArrayQueue).
///
/// `try_push`, `try_pop`, `push_many` and `pop_many` never block and stay attached to the GIL;
/// `push` and `pop` release the GIL while they wait.
///
/// Args:
///     capacity: maximum number of items, 1 to 2**26 (ValueError otherwise).
#[pyclass(frozen, weakref, module = "hulk._native", name = "BoundedQueue")]
#[derive(Debug)]
pub struct PyBoundedQueue {
    core: Core<Py<PyAny>, Py<PyAny>>,
}

impl PyBoundedQueue {
    fn closed_error() -> PyErr {
        QueueClosed::new_err("queue is closed")
    }

    /// `try_push` for other native types: True when queued, False when full.
    pub(crate) fn push_one(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<bool> {
        match self.core.try_push(item) {
            Ok(wakers) => {
                if !wakers.is_empty() {
                    run_wakers(py, wakers);
                }
                Ok(true)
            }
            Err(PushError::Full(_)) => Ok(false),
            Err(PushError::Closed(_)) => Err(Self::closed_error()),
        }
    }

    fn drained_error() -> PyErr {
        QueueClosed::new_err("queue is closed and drained")
    }
}

/// Runs one-shot wakers on this thread; one that raises is reported as unraisable so the push
/// that triggered it still succeeds and the other wakers still run.
fn run_wakers(py: Python<'_>, wakers: Vec<Py<PyAny>>) {
    for waker in wakers {
        if let Err(err) = waker.call0(py) {
            err.write_unraisable(py, Some(waker.bind(py)));
        }
    }
}

/// Validates a `timeout` and turns it into a deadline (None: wait forever).
fn deadline_of(what: &str, timeout: Option<f64>) -> PyResult<Option<Instant>> {
    let Some(timeout) = timeout else {
        return Ok(None);
    };
    let seconds = check_duration(what, timeout)?;
    // A timeout too large to represent is as good as none.
    Ok(Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| Instant::now().checked_add(d)))
}

/// How long a blocked call may sleep before checking signals: Python runs signal handlers only on
/// the main thread, so other threads sleep until woken or timed out.
fn signal_slice(py: Python<'_>) -> PyResult<Option<Duration>> {
    let threading = py.import(intern!(py, "threading"))?;
    let main = threading
        .call_method0(intern!(py, "main_thread"))?
        .getattr(intern!(py, "ident"))?;
    let current = threading.call_method0(intern!(py, "get_ident"))?;
    Ok(main.eq(current)?.then_some(SIGNAL_CHECK_INTERVAL))
}

/// The end of the next sleep: the deadline, or sooner to check signals.
fn next_wake(deadline: Option<Instant>, slice: Option<Duration>) -> Option<Instant> {
    let by_signal = slice.and_then(|s| Instant::now().checked_add(s));
    match (deadline, by_signal) {
        (Some(d), Some(s)) => Some(d.min(s)),
        (d, s) => d.or(s),
    }
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

#[pymethods]
impl PyBoundedQueue {
    #[new]
    fn new(capacity: i64) -> PyResult<Self> {
        let what = "BoundedQueue(capacity)";
        let capacity = usize::try_from(capacity)
            .map_err(|_| PyValueError::new_err(format!("{what} must be >= 1, got {capacity}")))?;
        let capacity = check_count(what, capacity)?;
        Core::new(capacity)
            .map(|core| Self { core })
            .ok_or_else(|| {
                PyValueError::new_err(format!("{what} must be <= {MAX_CAPACITY}, got {capacity}"))
            })
    }

    /// Maximum number of items.
    #[getter]
    fn capacity(&self) -> usize {
        self.core.capacity()
    }

    /// True once `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "BoundedQueue(capacity={}, len={}, closed={})",
            self.core.capacity(),
            self.core.len(),
            if self.core.is_closed() {
                "True"
            } else {
                "False"
            }
        )
    }

    /// Appends `item`; False when full (backpressure, counted as rejected). Raises QueueClosed when closed.
    fn try_push(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<bool> {
        self.push_one(py, item)
    }

    /// Removes the oldest item; raises QueueEmpty when empty (None is a valid item).
    ///
    /// Raises QueueClosed instead when the queue is closed and drained.
    fn try_pop(&self) -> PyResult<Py<PyAny>> {
        match self.core.try_pop() {
            Ok(item) => Ok(item),
            Err(PopError::Empty) => Err(QueueEmpty::new_err("queue is empty")),
            Err(PopError::Closed) => Err(Self::drained_error()),
        }
    }

    /// Appends, waiting up to `timeout` seconds (None: forever) for room. Releases the GIL while waiting.
    ///
    /// Raises:
    ///     QueueFull: still full after `timeout` (counted as rejected).
    ///     QueueClosed: the queue is (or gets) closed.
    ///     ValueError: `timeout` is negative, NaN or infinite.
    #[pyo3(signature = (item, timeout=None))]
    fn push(&self, py: Python<'_>, item: Py<PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let deadline = deadline_of("BoundedQueue.push(timeout)", timeout)?;
        let mut item = match self.core.offer(item) {
            Ok(wakers) => {
                run_wakers(py, wakers);
                return Ok(());
            }
            Err(PushError::Closed(_)) => return Err(Self::closed_error()),
            Err(PushError::Full(back)) => back,
        };
        let slice = if expired(deadline) {
            None
        } else {
            signal_slice(py)?
        };
        loop {
            if expired(deadline) {
                self.core.count_rejected();
                return Err(queue_full(py, self.core.capacity()));
            }
            let until = next_wake(deadline, slice);
            match py.detach(|| self.core.push_until(item, until)) {
                Ok(wakers) => {
                    run_wakers(py, wakers);
                    return Ok(());
                }
                Err((_, WaitError::Closed)) => return Err(Self::closed_error()),
                Err((back, WaitError::TimedOut)) => {
                    item = back;
                    py.check_signals()?;
                }
            }
        }
    }

    /// Removes the oldest item, waiting up to `timeout` seconds (None: forever). Releases the GIL.
    ///
    /// Raises:
    ///     QueueEmpty: still empty after `timeout`.
    ///     QueueClosed: the queue is closed and drained.
    ///     ValueError: `timeout` is negative, NaN or infinite.
    #[pyo3(signature = (timeout=None))]
    fn pop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let deadline = deadline_of("BoundedQueue.pop(timeout)", timeout)?;
        match self.core.try_pop() {
            Ok(item) => return Ok(item),
            Err(PopError::Closed) => return Err(Self::drained_error()),
            Err(PopError::Empty) => {}
        }
        let slice = if expired(deadline) {
            None
        } else {
            signal_slice(py)?
        };
        loop {
            if expired(deadline) {
                return Err(QueueEmpty::new_err(format!(
                    "queue still empty after {}s",
                    timeout.unwrap_or_default()
                )));
            }
            let until = next_wake(deadline, slice);
            match py.detach(|| self.core.pop_until(until)) {
                Ok(item) => return Ok(item),
                Err(WaitError::Closed) => return Err(Self::drained_error()),
                Err(WaitError::TimedOut) => py.check_signals()?,
            }
        }
    }

    /// Appends items in order until full; returns how many were accepted. Raises QueueClosed.
    ///
    /// The items that did not fit are not queued and count as rejected; an iterable other than a
    /// list or tuple is read to its end first.
    fn push_many(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<usize> {
        let result = if let Ok(list) = items.cast::<PyList>() {
            self.core.push_many(list.iter().map(Bound::unbind))
        } else if let Ok(tuple) = items.cast::<PyTuple>() {
            self.core.push_many(tuple.iter().map(Bound::unbind))
        } else {
            if self.core.is_closed() {
                return Err(Self::closed_error());
            }
            let collected = items
                .try_iter()?
                .map(|item| item.map(Bound::unbind))
                .collect::<PyResult<Vec<_>>>()?;
            self.core.push_many(collected)
        };
        match result {
            Ok((accepted, wakers)) => {
                run_wakers(py, wakers);
                Ok(accepted)
            }
            Err(Closed) => Err(Self::closed_error()),
        }
    }

    /// Removes up to `max_items` items (may return an empty list).
    ///
    /// Raises:
    ///     ValueError: `max_items` < 1.
    ///     QueueClosed: the queue is closed and drained.
    fn pop_many<'py>(&self, py: Python<'py>, max_items: i64) -> PyResult<Bound<'py, PyList>> {
        let what = "BoundedQueue.pop_many(max_items)";
        let max_items = usize::try_from(max_items)
            .map_err(|_| PyValueError::new_err(format!("{what} must be >= 1, got {max_items}")))?;
        let max_items = check_count(what, max_items)?;
        let mut out = Vec::with_capacity(max_items.min(self.core.len()));
        match self.core.pop_many(max_items, &mut out) {
            Ok(_) => PyList::new(py, out),
            Err(Closed) => Err(Self::drained_error()),
        }
    }

    /// Closes the queue: waiters wake, pushes raise QueueClosed, remaining items can be popped.
    ///
    /// A push running concurrently with `close()` may still land; its item stays poppable.
    fn close(&self, py: Python<'_>) {
        let wakers = self.core.close();
        run_wakers(py, wakers);
    }

    /// Registers a one-shot callback run after the next push or close.
    ///
    /// Returns False, registering nothing, when the queue is already non-empty or closed, so the
    /// caller pops again instead of waiting. Every registered callback runs on the next push, on
    /// the pushing thread with the GIL held (an exception is reported as unraisable); asyncio
    /// consumers use `pop_async`, which registers one callback per event loop. Raises TypeError
    /// when `callback` is not callable.
    fn add_waiter(&self, callback: &Bound<'_, PyAny>) -> PyResult<bool> {
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "BoundedQueue.add_waiter(callback) must be callable, got {}",
                callback.get_type().name()?
            )));
        }
        Ok(self.core.add_waiter(callback.clone().unbind()).is_ok())
    }

    /// Counters: items pushed, popped and rejected (refused because the queue was full).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.core.stats();
        let dict = PyDict::new(py);
        dict.set_item(intern!(py, "pushed"), stats.pushed)?;
        dict.set_item(intern!(py, "popped"), stats.popped)?;
        dict.set_item(intern!(py, "rejected"), stats.rejected)?;
        Ok(dict)
    }
}

/// Adds `BoundedQueue` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBoundedQueue>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Barrier};
    use std::thread;

    type Q = Core<u64, u32>;

    fn queue(capacity: usize) -> Q {
        Core::new(capacity).unwrap()
    }

    fn in_ms(ms: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    #[test]
    fn capacity_is_checked() {
        assert!(Q::new(0).is_none());
        assert!(Q::new(MAX_CAPACITY + 1).is_none());
        assert_eq!(queue(3).capacity(), 3);
    }

    #[test]
    fn fifo_with_backpressure() {
        let q = queue(2);
        assert!(q.try_push(1).is_ok());
        assert!(q.try_push(2).is_ok());
        assert_eq!(q.try_push(3), Err(PushError::Full(3)));
        assert_eq!(q.len(), 2);
        assert_eq!(q.try_pop(), Ok(1));
        assert_eq!(q.try_pop(), Ok(2));
        assert_eq!(q.try_pop(), Err(PopError::Empty));
        assert_eq!(
            q.stats(),
            Stats {
                pushed: 2,
                popped: 2,
                rejected: 1
            }
        );
    }

    #[test]
    fn offer_does_not_count_rejections() {
        let q = queue(1);
        assert!(q.offer(1).is_ok());
        assert_eq!(q.offer(2), Err(PushError::Full(2)));
        assert_eq!(q.stats().rejected, 0);
    }

    #[test]
    fn batches_stop_when_full_and_count_the_rest() {
        let q = queue(3);
        assert_eq!(q.push_many(vec![1, 2]).map(|r| r.0), Ok(2));
        assert_eq!(q.push_many(vec![3, 4, 5]).map(|r| r.0), Ok(1));
        assert_eq!(q.stats().rejected, 2);
        let mut out = Vec::new();
        assert_eq!(q.pop_many(2, &mut out), Ok(2));
        assert_eq!(q.pop_many(10, &mut out), Ok(1));
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(q.pop_many(10, &mut out), Ok(0));
        assert_eq!(q.stats().popped, 3);
    }

    #[test]
    fn close_refuses_pushes_and_drains() {
        let q = queue(4);
        assert!(q.try_push(1).is_ok());
        assert!(q.close().is_empty());
        assert!(q.is_closed());
        assert_eq!(q.try_push(2), Err(PushError::Closed(2)));
        assert_eq!(q.push_many(vec![3]).map(|r| r.0), Err(Closed));
        assert_eq!(q.try_pop(), Ok(1));
        assert_eq!(q.try_pop(), Err(PopError::Closed));
        assert_eq!(q.pop_many(3, &mut Vec::new()), Err(Closed));
        assert_eq!(q.pop_until(None), Err(WaitError::Closed));
        assert_eq!(q.push_until(5, None), Err((5, WaitError::Closed)));
    }

    #[test]
    fn blocking_calls_time_out() {
        let q = queue(1);
        assert_eq!(q.pop_until(in_ms(5)), Err(WaitError::TimedOut));
        assert!(q.try_push(1).is_ok());
        assert_eq!(q.push_until(2, in_ms(5)), Err((2, WaitError::TimedOut)));
        assert_eq!(q.stats().rejected, 0);
    }

    #[test]
    fn waiters_are_refused_when_not_empty_or_closed() {
        let q = queue(2);
        assert!(q.try_push(1).is_ok());
        assert_eq!(q.add_waiter(7), Err(7));
        assert_eq!(q.try_pop(), Ok(1));
        q.close();
        assert_eq!(q.add_waiter(8), Err(8));
    }

    #[test]
    fn waiters_run_once_after_the_next_push() {
        let q = queue(4);
        assert_eq!(q.add_waiter(1), Ok(()));
        assert_eq!(q.add_waiter(2), Ok(()));
        assert_eq!(q.try_push(10), Ok(vec![1, 2]));
        assert_eq!(q.try_push(11), Ok(vec![]));
        let mut out = Vec::new();
        assert_eq!(q.pop_many(4, &mut out), Ok(2));
        assert_eq!(q.add_waiter(3), Ok(()));
        assert_eq!(q.push_many(vec![1, 2]), Ok((2, vec![3])));
        let mut out = Vec::new();
        assert_eq!(q.pop_many(4, &mut out), Ok(2));
        assert_eq!(q.add_waiter(4), Ok(()));
        assert_eq!(q.close(), vec![4]);
    }

    #[test]
    fn a_push_wakes_a_parked_pop() {
        let q = Arc::new(queue(1));
        let popper = {
            let q = q.clone();
            thread::spawn(move || q.pop_until(None))
        };
        assert!(q.push_until(42, None).is_ok());
        assert_eq!(popper.join().unwrap(), Ok(42));
    }

    #[test]
    fn a_pop_wakes_a_parked_push() {
        let q = Arc::new(queue(1));
        assert!(q.try_push(1).is_ok());
        let pusher = {
            let q = q.clone();
            thread::spawn(move || q.push_until(2, None).map(|_| ()))
        };
        assert_eq!(q.pop_until(None), Ok(1));
        assert_eq!(pusher.join().unwrap(), Ok(()));
        assert_eq!(q.pop_until(None), Ok(2));
    }

    #[test]
    fn close_wakes_parked_callers() {
        let empty = Arc::new(queue(1));
        let full = Arc::new(queue(1));
        assert!(full.try_push(0).is_ok());
        let start = Arc::new(Barrier::new(5));
        let mut handles = Vec::new();
        for _ in 0..2 {
            let (q, go) = (empty.clone(), start.clone());
            handles.push(thread::spawn(move || {
                go.wait();
                q.pop_until(None).map(|_| ())
            }));
            let (q, go) = (full.clone(), start.clone());
            handles.push(thread::spawn(move || {
                go.wait();
                q.push_until(1, None).map(|_| ()).map_err(|e| e.1)
            }));
        }
        start.wait();
        // The callers may close before or after they park: both must end with Closed.
        empty.close();
        full.close();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), Err(WaitError::Closed));
        }
    }

    #[test]
    fn every_item_is_delivered_exactly_once() {
        const PRODUCERS: u64 = 4;
        const PER_PRODUCER: u64 = 20_000;
        let q = Arc::new(Core::<u64, u32>::new(8).unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let remaining = Arc::new(AtomicU64::new(PRODUCERS * PER_PRODUCER));
        let mut handles = Vec::new();
        for p in 0..PRODUCERS {
            let q = q.clone();
            handles.push(thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    assert!(q.push_until(p * PER_PRODUCER + i, None).is_ok());
                }
            }));
        }
        for _ in 0..4 {
            let (q, received, remaining) = (q.clone(), received.clone(), remaining.clone());
            handles.push(thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    match q.pop_until(None) {
                        Ok(item) => {
                            mine.push(item);
                            if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                                q.close();
                            }
                        }
                        Err(WaitError::Closed) => break,
                        Err(WaitError::TimedOut) => panic!("no deadline was set"),
                    }
                }
                received.lock().extend(mine);
            }));
        }
        for handle in handles {
            handle.join().unwrap();
        }
        let received = received.lock();
        assert_eq!(received.len() as u64, PRODUCERS * PER_PRODUCER);
        let unique: HashSet<_> = received.iter().copied().collect();
        assert_eq!(unique.len(), received.len());
        let stats = q.stats();
        assert_eq!((stats.pushed, stats.popped), (20_000 * 4, 20_000 * 4));
    }

    #[test]
    fn a_waker_registered_while_pushing_is_never_lost() {
        // Each round: a consumer registers a waker (or sees the item), a producer pushes; the
        // waker must come back from the push or the registration must have been refused.
        let q = Arc::new(Core::<u64, u64>::new(1).unwrap());
        for round in 0..2_000u64 {
            let start = Arc::new(Barrier::new(2));
            let producer = {
                let (q, start) = (q.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    q.try_push(round).unwrap()
                })
            };
            start.wait();
            let registered = q.add_waiter(round).is_ok();
            let wakers = producer.join().unwrap();
            if registered {
                assert_eq!(wakers, vec![round], "round {round}: waker lost");
            } else {
                assert!(wakers.is_empty());
            }
            assert_eq!(q.try_pop(), Ok(round));
        }
    }
}
