//! A circuit breaker with resilience4j's semantics, in plain Rust with a thin Python wrapper.
//!
//! The state machine (`Breaker`) is plain Rust driven by explicit times so `cargo test` can walk
//! every transition without a clock; `CircuitBreaker` wraps it in one `parking_lot::Mutex`.
//!
//! Semantics (resilience4j's, in snake_case):
//! - CLOSED records outcomes into a sliding window, either the last `window_size` calls (count) or
//!   the calls of the last `window_size` seconds (time, in buckets of `bucket_width` seconds).
//!   Rates are percentages computed only once the window holds `minimum_calls` (for count windows
//!   `min(minimum_calls, window_size)`); the breaker opens when a rate is `>=` its threshold, or,
//!   beyond resilience4j, when `failure_count_threshold` failures are in the window.
//! - A call is slow when its duration is strictly greater than `slow_call_duration`.
//! - OPEN refuses calls; once `wait_open * (1 + jitter * u)` seconds (u uniform in [0, 1), drawn
//!   per opening) have passed, the next call or read moves it to HALF_OPEN by itself.
//! - HALF_OPEN permits exactly `half_open_calls` probes; once that many outcomes are recorded,
//!   their rates decide: OPEN again, or CLOSED with a fresh window. A probe that ends with no
//!   outcome gives its slot back through `release`.
//! - Outcomes recorded while OPEN (calls permitted before it opened) are ignored.

use crate::clock;
use crate::errors;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Largest count window, and largest number of time buckets: bounds the memory one breaker takes.
pub const MAX_WINDOW_SLOTS: usize = 1_000_000;

/// The three states of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls pass; outcomes fill the sliding window.
    Closed,
    /// Calls are refused until the (jittered) wait has passed.
    Open,
    /// A fixed number of probe calls pass; their outcomes decide the next state.
    HalfOpen,
}

impl State {
    /// The Python-facing name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Which sliding window the CLOSED state uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowKind {
    /// The last `window_size` calls.
    Count,
    /// The calls of the last `window_size` seconds, in buckets of `bucket_width` seconds.
    Time,
}

/// A breaker's configuration; `validate` checks every field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Failure-rate percentage in (0, 100] at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Slow-call-rate percentage in (0, 100] at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// Seconds above which a call counts as slow.
    pub slow_call_duration: f64,
    /// Count or time window.
    pub window_kind: WindowKind,
    /// Calls (count window) or seconds (time window), >= 1.
    pub window_size: i64,
    /// Calls the window must hold before rates are computed, >= 1.
    pub minimum_calls: i64,
    /// Seconds the breaker stays open before half-opening, >= 0.
    pub wait_open: f64,
    /// Extra random wait, as a fraction of `wait_open`, in [0, 1].
    pub jitter: f64,
    /// Probes permitted in HALF_OPEN, >= 1.
    pub half_open_calls: i64,
    /// Width of one time-window bucket in seconds, in (0, window_size].
    pub bucket_width: f64,
    /// Failures in the window that open the breaker regardless of `minimum_calls`, >= 1.
    pub failure_count_threshold: Option<i64>,
    /// Seed of the jitter generator (None: from the OS).
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: 60.0,
            window_kind: WindowKind::Count,
            window_size: 100,
            minimum_calls: 100,
            wait_open: 60.0,
            jitter: 0.0,
            half_open_calls: 10,
            bucket_width: 1.0,
            failure_count_threshold: None,
            seed: None,
        }
    }
}

fn check_rate(what: &str, value: f64) -> Result<(), String> {
    if value.is_nan() || value <= 0.0 || value > 100.0 {
        return Err(format!(
            "CircuitBreaker({what}) must be a percentage in (0, 100], got {value}"
        ));
    }
    Ok(())
}

fn check_seconds(what: &str, value: f64) -> Result<(), String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "CircuitBreaker({what}) must be a finite number of seconds >= 0, got {value}"
        ));
    }
    Ok(())
}

fn check_at_least_one(what: &str, value: i64) -> Result<(), String> {
    if value < 1 {
        return Err(format!("CircuitBreaker({what}) must be >= 1, got {value}"));
    }
    Ok(())
}

/// Number of buckets of a time window: `ceil(window_size / bucket_width)`, where a ratio within
/// 1e-9 (relative) of an integer counts as that integer, so 3 s in 0.1 s buckets is 30 buckets
/// although `3.0 / 0.1` is 30.000000000000004 in floating point.
pub fn bucket_count(window_size: i64, bucket_width: f64) -> f64 {
    let ratio = window_size as f64 / bucket_width;
    let rounded = ratio.round();
    if (ratio - rounded).abs() <= 1e-9 * ratio.max(1.0) {
        rounded.max(1.0)
    } else {
        ratio.ceil().max(1.0)
    }
}

impl Config {
    /// Checks every field; the error names the argument and its value.
    pub fn validate(&self) -> Result<(), String> {
        check_rate("failure_rate_threshold", self.failure_rate_threshold)?;
        check_rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        check_seconds("slow_call_duration", self.slow_call_duration)?;
        check_at_least_one("window_size", self.window_size)?;
        check_at_least_one("minimum_calls", self.minimum_calls)?;
        check_seconds("wait_open", self.wait_open)?;
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "CircuitBreaker(jitter) must be a fraction of wait_open in [0, 1], got {}",
                self.jitter
            ));
        }
        check_at_least_one("half_open_calls", self.half_open_calls)?;
        if !self.bucket_width.is_finite() || self.bucket_width <= 0.0 {
            return Err(format!(
                "CircuitBreaker(bucket_width) must be a finite number of seconds > 0, got {}",
                self.bucket_width
            ));
        }
        if let Some(n) = self.failure_count_threshold {
            check_at_least_one("failure_count_threshold", n)?;
        }
        match self.window_kind {
            WindowKind::Count => {
                if self.window_size as u64 > MAX_WINDOW_SLOTS as u64 {
                    return Err(format!(
                        "CircuitBreaker(window_size) must be <= {MAX_WINDOW_SLOTS} calls for a count window, got {}",
                        self.window_size
                    ));
                }
            }
            WindowKind::Time => {
                if self.bucket_width > self.window_size as f64 {
                    return Err(format!(
                        "CircuitBreaker(bucket_width) must be <= window_size ({} s) for a time window, got {}",
                        self.window_size, self.bucket_width
                    ));
                }
                if bucket_count(self.window_size, self.bucket_width) > MAX_WINDOW_SLOTS as f64 {
                    return Err(format!(
                        "CircuitBreaker(bucket_width) gives more than {MAX_WINDOW_SLOTS} buckets for a {} s window, got {}",
                        self.window_size, self.bucket_width
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Counts of calls, failures and slow calls: the aggregate of a window or of the probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls recorded.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which slower than `slow_call_duration` (failed or not).
    pub slow: u64,
}

impl Tally {
    #[inline]
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u64::from(failed);
        self.slow += u64::from(slow);
    }

    /// Failure and slow-call rates in percent, or -1.0 each while `calls < minimum`.
    #[inline]
    pub fn rates(&self, minimum: u64) -> (f64, f64) {
        if self.calls < minimum || self.calls == 0 {
            return (-1.0, -1.0);
        }
        let calls = self.calls as f64;
        (
            self.failures as f64 * 100.0 / calls,
            self.slow as f64 * 100.0 / calls,
        )
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// The last `size` outcomes in a ring, with running totals: O(1) record and O(1) clear.
#[derive(Debug)]
struct CountWindow {
    ring: Box<[u8]>,
    head: usize,
    tally: Tally,
}

impl CountWindow {
    fn new(size: usize) -> Self {
        Self {
            ring: vec![0u8; size].into_boxed_slice(),
            head: 0,
            tally: Tally::default(),
        }
    }

    #[inline]
    fn record(&mut self, failed: bool, slow: bool) {
        let size = self.ring.len();
        if self.tally.calls as usize == size {
            let old = self.ring[self.head];
            self.tally.calls -= 1;
            self.tally.failures -= u64::from(old & FAILED != 0);
            self.tally.slow -= u64::from(old & SLOW != 0);
        }
        self.ring[self.head] = (u8::from(failed) * FAILED) | (u8::from(slow) * SLOW);
        self.tally.add(failed, slow);
        self.head += 1;
        if self.head == size {
            self.head = 0;
        }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.tally = Tally::default();
    }
}

/// One bucket of a time window, stamped with its epoch and the window's generation.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    epoch: i64,
    generation: u64,
    tally: Tally,
}

/// The calls of the last `n` buckets of `width` seconds (the current, partial one included), in a
/// ring of buckets stamped with their epoch (`floor(now / width)`). Recording is O(1) plus one step
/// per bucket that time has moved past since the last call (at most `n`, and none after a gap of
/// `n` buckets or more, which empties the window at once). Clearing bumps a generation: O(1).
#[derive(Debug)]
struct TimeWindow {
    buckets: Box<[Bucket]>,
    width: f64,
    head: Option<i64>,
    generation: u64,
    tally: Tally,
}

impl TimeWindow {
    fn new(n: usize, width: f64) -> Self {
        let empty = Bucket {
            epoch: i64::MIN,
            generation: 0,
            tally: Tally::default(),
        };
        Self {
            buckets: vec![empty; n].into_boxed_slice(),
            width,
            head: None,
            generation: 1,
            tally: Tally::default(),
        }
    }

    #[inline]
    fn slot(&self, epoch: i64) -> usize {
        epoch.rem_euclid(self.buckets.len() as i64) as usize
    }

    /// Slides the window so it ends at the bucket holding `now` (never backwards: a `now` older
    /// than the newest seen counts as the newest). Returns the current epoch.
    fn advance(&mut self, now: f64) -> i64 {
        // `as` saturates, so absurd times stay well-defined.
        let epoch = (now / self.width).floor() as i64;
        let head = match self.head {
            None => {
                self.head = Some(epoch);
                return epoch;
            }
            Some(h) if epoch <= h => return h,
            Some(h) => h,
        };
        let n = self.buckets.len() as i64;
        let gap = epoch.saturating_sub(head);
        if gap >= n {
            self.tally = Tally::default();
        } else {
            for x in head + 1..=epoch {
                let slot = self.slot(x);
                let b = self.buckets[slot];
                if b.generation == self.generation && Some(b.epoch) == x.checked_sub(n) {
                    self.tally.calls -= b.tally.calls;
                    self.tally.failures -= b.tally.failures;
                    self.tally.slow -= b.tally.slow;
                }
            }
        }
        self.head = Some(epoch);
        epoch
    }

    #[inline]
    fn record(&mut self, now: f64, failed: bool, slow: bool) {
        let epoch = self.advance(now);
        let slot = self.slot(epoch);
        let generation = self.generation;
        let b = &mut self.buckets[slot];
        if b.epoch != epoch || b.generation != generation {
            *b = Bucket {
                epoch,
                generation,
                tally: Tally::default(),
            };
        }
        b.tally.add(failed, slow);
        self.tally.add(failed, slow);
    }

    fn clear(&mut self) {
        self.generation += 1;
        self.tally = Tally::default();
    }
}

#[derive(Debug)]
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

/// A `now` resolved against the clock at most once, and only if a transition needs it.
struct LazyNow(Option<f64>);

impl LazyNow {
    #[inline]
    fn get(&mut self) -> f64 {
        *self.0.get_or_insert_with(clock::monotonic)
    }
}

/// A snapshot of a breaker's state, rates and counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// The state after any due OPEN -> HALF_OPEN move.
    pub state: State,
    /// Failure percentage, or -1.0 below the minimum number of calls.
    pub failure_rate: f64,
    /// Slow-call percentage, or -1.0 below the minimum number of calls.
    pub slow_call_rate: f64,
    /// Calls in the window (CLOSED, OPEN) or probe outcomes recorded (HALF_OPEN).
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which slow.
    pub slow_calls: u64,
    /// Calls refused since creation or the last `reset`.
    pub rejected: u64,
}

/// The breaker's state machine. Not synchronised: `CircuitBreaker` puts it behind a mutex.
#[derive(Debug)]
pub struct Breaker {
    cfg: Config,
    min_calls: u64,
    state: State,
    window: Window,
    probes: Tally,
    in_flight: u64,
    open_until: f64,
    rejected: u64,
    rng: SmallRng,
}

impl Breaker {
    /// Builds a CLOSED breaker with an empty window; fails with a message if `cfg` is invalid.
    pub fn new(cfg: Config) -> Result<Self, String> {
        cfg.validate()?;
        let (window, min_calls) = match cfg.window_kind {
            WindowKind::Count => (
                Window::Count(CountWindow::new(cfg.window_size as usize)),
                cfg.minimum_calls.min(cfg.window_size) as u64,
            ),
            WindowKind::Time => (
                Window::Time(TimeWindow::new(
                    bucket_count(cfg.window_size, cfg.bucket_width) as usize,
                    cfg.bucket_width,
                )),
                cfg.minimum_calls as u64,
            ),
        };
        let rng = match cfg.seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        Ok(Self {
            cfg,
            min_calls,
            state: State::Closed,
            window,
            probes: Tally::default(),
            in_flight: 0,
            open_until: 0.0,
            rejected: 0,
            rng,
        })
    }

    /// The breaker's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Applies a due OPEN -> HALF_OPEN move; reads the clock only when OPEN.
    #[inline]
    fn tick(&mut self, now: &mut LazyNow) {
        if self.state == State::Open && now.get() >= self.open_until {
            self.state = State::HalfOpen;
            self.probes = Tally::default();
            self.in_flight = 0;
        }
    }

    fn trip(&mut self, now: f64) {
        let extra = if self.cfg.jitter > 0.0 {
            self.cfg.jitter * self.rng.random::<f64>()
        } else {
            0.0
        };
        self.state = State::Open;
        self.open_until = now + self.cfg.wait_open * (1.0 + extra);
    }

    fn close(&mut self) {
        self.state = State::Closed;
        match &mut self.window {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }

    fn above_thresholds(&self, tally: &Tally, minimum: u64) -> bool {
        let (fr, sr) = tally.rates(minimum);
        fr >= 0.0
            && (fr >= self.cfg.failure_rate_threshold || sr >= self.cfg.slow_call_rate_threshold)
    }

    fn allow_inner(&mut self, now: &mut LazyNow) -> bool {
        self.tick(now);
        let ok = match self.state {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen => {
                if self.in_flight + self.probes.calls < self.cfg.half_open_calls as u64 {
                    self.in_flight += 1;
                    true
                } else {
                    false
                }
            }
        };
        if !ok {
            self.rejected += 1;
        }
        ok
    }

    /// Asks permission for one call; a refusal counts as rejected.
    pub fn allow(&mut self, now: Option<f64>) -> bool {
        self.allow_inner(&mut LazyNow(now))
    }

    /// Like `allow`, but on refusal returns the seconds until the breaker half-opens (0.0 when it
    /// is half-open with every probe slot taken).
    pub fn acquire(&mut self, now: Option<f64>) -> Result<(), f64> {
        let mut now = LazyNow(now);
        if self.allow_inner(&mut now) {
            Ok(())
        } else {
            Err(self.retry_after_inner(&mut now))
        }
    }

    fn retry_after_inner(&mut self, now: &mut LazyNow) -> f64 {
        self.tick(now);
        if self.state == State::Open {
            (self.open_until - now.get()).max(0.0)
        } else {
            0.0
        }
    }

    /// Seconds until an open breaker half-opens (0.0 when not open).
    pub fn retry_after(&mut self, now: Option<f64>) -> f64 {
        self.retry_after_inner(&mut LazyNow(now))
    }

    /// Records the outcome of a permitted call that took `duration` seconds.
    pub fn record(&mut self, failed: bool, duration: f64, now: Option<f64>) {
        let mut now = LazyNow(now);
        self.tick(&mut now);
        let slow = duration > self.cfg.slow_call_duration;
        match self.state {
            // A call permitted before the breaker opened: resilience4j ignores it for the window.
            State::Open => {}
            State::Closed => {
                let tally = match &mut self.window {
                    Window::Count(w) => {
                        w.record(failed, slow);
                        w.tally
                    }
                    Window::Time(w) => {
                        w.record(now.get(), failed, slow);
                        w.tally
                    }
                };
                let by_count = self
                    .cfg
                    .failure_count_threshold
                    .is_some_and(|n| tally.failures >= n as u64);
                if by_count || self.above_thresholds(&tally, self.min_calls) {
                    self.trip(now.get());
                }
            }
            State::HalfOpen => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.probes.add(failed, slow);
                let needed = self.cfg.half_open_calls as u64;
                if self.probes.calls >= needed {
                    let probes = self.probes;
                    if self.above_thresholds(&probes, needed) {
                        self.trip(now.get());
                    } else {
                        self.close();
                    }
                }
            }
        }
    }

    /// Ends a permitted call with no outcome, giving back its probe slot when HALF_OPEN.
    pub fn release(&mut self, now: Option<f64>) {
        self.tick(&mut LazyNow(now));
        if self.state == State::HalfOpen {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// Whether it is closed now, without moving it: the one state in which `allow` always
    /// allows and changes nothing (no clock is read; an OPEN breaker due to half-open is not
    /// closed either).
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The state after any due OPEN -> HALF_OPEN move.
    pub fn state(&mut self, now: Option<f64>) -> State {
        self.tick(&mut LazyNow(now));
        self.state
    }

    /// Current state, rates and counters (slides a time window to `now`).
    pub fn metrics(&mut self, now: Option<f64>) -> Metrics {
        let mut now = LazyNow(now);
        self.tick(&mut now);
        let (tally, minimum) = match self.state {
            State::HalfOpen => (self.probes, self.cfg.half_open_calls as u64),
            State::Closed | State::Open => match &mut self.window {
                Window::Count(w) => (w.tally, self.min_calls),
                Window::Time(w) => {
                    w.advance(now.get());
                    (w.tally, self.min_calls)
                }
            },
        };
        let (failure_rate, slow_call_rate) = tally.rates(minimum);
        Metrics {
            state: self.state,
            failure_rate,
            slow_call_rate,
            calls: tally.calls,
            failures: tally.failures,
            slow_calls: tally.slow,
            rejected: self.rejected,
        }
    }

    /// Back to CLOSED with an empty window, no probes and `rejected` at zero.
    pub fn reset(&mut self) {
        self.close();
        self.probes = Tally::default();
        self.in_flight = 0;
        self.rejected = 0;
    }

    /// Opens now, as if tripped: it half-opens after the usual (jittered) wait.
    pub fn force_open(&mut self, now: Option<f64>) {
        let now = LazyNow(now).get();
        self.trip(now);
    }
}

// --- Python wrapper ------------------------------------------------------------------------------

/// Resolves an optional caller `now`, refusing NaN and infinities.
#[inline]
fn check_now(now: Option<f64>) -> PyResult<Option<f64>> {
    match now {
        Some(t) if !t.is_finite() => Err(PyValueError::new_err(format!(
            "now must be a finite number of monotonic seconds, got {t}"
        ))),
        _ => Ok(now),
    }
}

/// A circuit breaker with resilience4j's semantics (count or time sliding window).
///
/// Thread-safe: every method takes one internal lock for a few nanoseconds and never calls back
/// into Python while holding it. See `hulk._native.pyi` for the full contract.
#[pyclass(frozen, module = "hulk._native", name = "CircuitBreaker")]
pub struct PyCircuitBreaker {
    name: String,
    pub(crate) inner: Mutex<Breaker>,
}

#[pymethods]
impl PyCircuitBreaker {
    #[new]
    #[pyo3(signature = (
        *,
        name = "default",
        failure_rate_threshold = 50.0,
        slow_call_rate_threshold = 100.0,
        slow_call_duration = 60.0,
        window_type = "count",
        window_size = 100,
        minimum_calls = 100,
        wait_open = 60.0,
        jitter = 0.0,
        half_open_calls = 10,
        bucket_width = 1.0,
        failure_count_threshold = None,
        seed = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        failure_rate_threshold: f64,
        slow_call_rate_threshold: f64,
        slow_call_duration: f64,
        window_type: &str,
        window_size: i64,
        minimum_calls: i64,
        wait_open: f64,
        jitter: f64,
        half_open_calls: i64,
        bucket_width: f64,
        failure_count_threshold: Option<i64>,
        seed: Option<i128>,
    ) -> PyResult<Self> {
        let window_kind = match window_type {
            "count" => WindowKind::Count,
            "time" => WindowKind::Time,
            other => {
                return Err(PyValueError::new_err(format!(
                    "CircuitBreaker(window_type) must be \"count\" or \"time\", got {other:?}"
                )))
            }
        };
        let seed = match seed {
            None => None,
            Some(s) => Some(u64::try_from(s).map_err(|_| {
                PyValueError::new_err(format!(
                    "CircuitBreaker(seed) must be an integer in [0, 2**64), got {s}"
                ))
            })?),
        };
        let cfg = Config {
            failure_rate_threshold,
            slow_call_rate_threshold,
            slow_call_duration,
            window_kind,
            window_size,
            minimum_calls,
            wait_open,
            jitter,
            half_open_calls,
            bucket_width,
            failure_count_threshold,
            seed,
        };
        let breaker = Breaker::new(cfg).map_err(PyValueError::new_err)?;
        Ok(Self {
            name: name.to_owned(),
            inner: Mutex::new(breaker),
        })
    }

    fn __repr__(&self) -> String {
        let state = self.inner.lock().state(None);
        format!(
            "CircuitBreaker(name={:?}, state={:?})",
            self.name,
            state.as_str()
        )
    }

    /// The breaker's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// "closed", "open" or "half_open" (reading it applies a due OPEN -> HALF_OPEN move).
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.lock().state(None).as_str()
    }

    /// Asks permission for one call (counting half-open probes); False counts as rejected.
    #[pyo3(signature = (now=None))]
    fn allow(&self, now: Option<f64>) -> PyResult<bool> {
        let now = check_now(now)?;
        Ok(self.inner.lock().allow(now))
    }

    /// Like `allow`, but raises BreakerOpen (with `retry_after`) instead of returning False.
    #[pyo3(signature = (now=None))]
    fn acquire(&self, py: Python<'_>, now: Option<f64>) -> PyResult<()> {
        let now = check_now(now)?;
        let outcome = self.inner.lock().acquire(now);
        outcome.map_err(|retry_after| errors::breaker_open(py, &self.name, retry_after))
    }

    /// Seconds until an open breaker half-opens (0.0 when not open).
    #[pyo3(signature = (now=None))]
    fn retry_after(&self, now: Option<f64>) -> PyResult<f64> {
        let now = check_now(now)?;
        Ok(self.inner.lock().retry_after(now))
    }

    /// Records a permitted call that succeeded after `duration` seconds.
    #[pyo3(signature = (duration, now=None))]
    fn record_success(&self, duration: f64, now: Option<f64>) -> PyResult<()> {
        errors::check_duration("record_success(duration)", duration)?;
        let now = check_now(now)?;
        self.inner.lock().record(false, duration, now);
        Ok(())
    }

    /// Records a permitted call that failed after `duration` seconds.
    #[pyo3(signature = (duration, now=None))]
    fn record_failure(&self, duration: f64, now: Option<f64>) -> PyResult<()> {
        errors::check_duration("record_failure(duration)", duration)?;
        let now = check_now(now)?;
        self.inner.lock().record(true, duration, now);
        Ok(())
    }

    /// Ends a permitted call with no outcome (cancelled, ignored error), freeing its probe slot.
    #[pyo3(signature = (now=None))]
    fn release(&self, now: Option<f64>) -> PyResult<()> {
        let now = check_now(now)?;
        self.inner.lock().release(now);
        Ok(())
    }

    /// Current state, rates and counters.
    #[pyo3(signature = (now=None))]
    fn metrics<'py>(&self, py: Python<'py>, now: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let now = check_now(now)?;
        let m = self.inner.lock().metrics(now);
        let d = PyDict::new(py);
        d.set_item("state", m.state.as_str())?;
        d.set_item("failure_rate", m.failure_rate)?;
        d.set_item("slow_call_rate", m.slow_call_rate)?;
        d.set_item("calls", m.calls)?;
        d.set_item("failures", m.failures)?;
        d.set_item("slow_calls", m.slow_calls)?;
        d.set_item("rejected", m.rejected)?;
        Ok(d)
    }

    /// Back to CLOSED with an empty window (and `rejected` at zero).
    fn reset(&self) {
        self.inner.lock().reset();
    }

    /// Opens now, as if tripped; it half-opens after the usual (jittered) wait.
    #[pyo3(signature = (now=None))]
    fn force_open(&self, now: Option<f64>) -> PyResult<()> {
        let now = check_now(now)?;
        self.inner.lock().force_open(now);
        Ok(())
    }
}

/// Registers `CircuitBreaker` in the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCircuitBreaker>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_cfg(size: i64, min: i64) -> Config {
        Config {
            window_kind: WindowKind::Count,
            window_size: size,
            minimum_calls: min,
            wait_open: 10.0,
            half_open_calls: 3,
            slow_call_duration: 1.0,
            seed: Some(7),
            ..Config::default()
        }
    }

    fn time_cfg(size: i64, width: f64, min: i64) -> Config {
        Config {
            window_kind: WindowKind::Time,
            window_size: size,
            bucket_width: width,
            ..count_cfg(size, min)
        }
    }

    fn at(t: f64) -> Option<f64> {
        Some(t)
    }

    #[test]
    fn is_closed_reads_the_state_without_moving_it() {
        let mut b = Breaker::new(count_cfg(10, 5)).unwrap();
        assert!(b.is_closed());
        b.force_open(at(0.0));
        assert!(!b.is_closed());
        // Due to half-open, but only a clock-reading call moves it there.
        assert!(!b.is_closed());
        assert_eq!(b.state(at(11.0)), State::HalfOpen);
        assert!(!b.is_closed());
    }

    #[test]
    fn closed_stays_closed_below_minimum_calls() {
        let mut b = Breaker::new(count_cfg(10, 5)).unwrap();
        for _ in 0..4 {
            assert!(b.allow(at(0.0)));
            b.record(true, 0.0, at(0.0));
        }
        let m = b.metrics(at(0.0));
        assert_eq!(m.state, State::Closed);
        assert_eq!((m.failure_rate, m.slow_call_rate), (-1.0, -1.0));
        assert_eq!((m.calls, m.failures, m.slow_calls), (4, 4, 0));
    }

    #[test]
    fn closed_opens_when_failure_rate_reaches_threshold() {
        let mut b = Breaker::new(count_cfg(4, 4)).unwrap();
        b.record(false, 0.0, at(0.0));
        b.record(false, 0.0, at(0.0));
        b.record(true, 0.0, at(0.0));
        assert_eq!(b.state(at(0.0)), State::Closed);
        // 2 failures of 4 is exactly 50%: >= opens.
        b.record(true, 0.0, at(1.0));
        assert_eq!(b.state(at(1.0)), State::Open);
        assert!(!b.allow(at(1.0)));
        assert_eq!(b.metrics(at(1.0)).rejected, 1);
        assert_eq!(b.retry_after(at(1.0)), 10.0);
        assert_eq!(b.retry_after(at(4.0)), 7.0);
    }

    #[test]
    fn slow_is_strictly_greater_and_slow_rate_opens() {
        let cfg = Config {
            slow_call_rate_threshold: 50.0,
            failure_rate_threshold: 100.0,
            ..count_cfg(2, 2)
        };
        let mut b = Breaker::new(cfg).unwrap();
        b.record(false, 1.0, at(0.0)); // exactly slow_call_duration: not slow
        b.record(false, 1.0, at(0.0));
        let m = b.metrics(at(0.0));
        assert_eq!(
            (m.state, m.slow_calls, m.slow_call_rate),
            (State::Closed, 0, 0.0)
        );
        b.record(false, 1.5, at(0.0));
        assert_eq!(b.state(at(0.0)), State::Open);
    }

    #[test]
    fn minimum_calls_is_capped_at_count_window_size() {
        let mut b = Breaker::new(count_cfg(3, 100)).unwrap();
        b.record(true, 0.0, at(0.0));
        b.record(false, 0.0, at(0.0));
        assert_eq!(b.metrics(at(0.0)).failure_rate, -1.0);
        b.record(false, 0.0, at(0.0));
        let m = b.metrics(at(0.0));
        assert!((m.failure_rate - 100.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.state, State::Closed);
    }

    #[test]
    fn count_window_evicts_oldest() {
        let mut b = Breaker::new(count_cfg(3, 3)).unwrap();
        b.record(true, 2.0, at(0.0));
        for _ in 0..3 {
            b.record(false, 0.0, at(0.0));
        }
        let m = b.metrics(at(0.0));
        assert_eq!(
            (m.calls, m.failures, m.slow_calls, m.failure_rate),
            (3, 0, 0, 0.0)
        );
    }

    #[test]
    fn open_half_opens_after_wait_and_probes_close_it() {
        let mut b = Breaker::new(count_cfg(2, 2)).unwrap();
        b.record(true, 0.0, at(0.0));
        b.record(true, 0.0, at(0.0));
        assert_eq!(b.state(at(9.999)), State::Open);
        assert_eq!(b.state(at(10.0)), State::HalfOpen);
        assert!(b.allow(at(10.0)));
        assert!(b.allow(at(10.0)));
        assert!(b.allow(at(10.0)));
        assert!(!b.allow(at(10.0)), "only half_open_calls probes");
        assert_eq!(b.retry_after(at(10.0)), 0.0);
        b.record(false, 0.0, at(11.0));
        b.record(true, 0.0, at(11.0));
        let m = b.metrics(at(11.0));
        assert_eq!(
            (m.state, m.calls, m.failures, m.failure_rate),
            (State::HalfOpen, 2, 1, -1.0)
        );
        // 1 failure of 3 probes = 33% < 50%.
        b.record(false, 0.0, at(11.0));
        let m = b.metrics(at(11.0));
        assert_eq!((m.state, m.calls, m.rejected), (State::Closed, 0, 1));
    }

    #[test]
    fn failing_probes_reopen() {
        let mut b = Breaker::new(count_cfg(2, 2)).unwrap();
        b.force_open(at(0.0));
        assert_eq!(b.state(at(0.0)), State::Open);
        assert_eq!(b.state(at(10.0)), State::HalfOpen);
        for _ in 0..3 {
            assert!(b.allow(at(10.0)));
        }
        b.record(true, 0.0, at(12.0));
        b.record(true, 0.0, at(12.0));
        b.record(false, 0.0, at(12.0));
        assert_eq!(b.state(at(12.0)), State::Open);
        assert_eq!(b.retry_after(at(12.0)), 10.0);
        assert_eq!(b.state(at(22.0)), State::HalfOpen);
    }

    #[test]
    fn release_frees_a_probe_slot() {
        let mut b = Breaker::new(count_cfg(2, 2)).unwrap();
        b.force_open(at(0.0));
        for _ in 0..3 {
            assert!(b.allow(at(10.0)));
        }
        assert!(!b.allow(at(10.0)));
        b.release(at(10.0));
        assert!(b.allow(at(10.0)));
        assert!(!b.allow(at(10.0)));
        // Releasing more than is in flight never creates extra slots.
        for _ in 0..10 {
            b.release(at(10.0));
        }
        assert_eq!(b.in_flight, 0);
        assert!(b.allow(at(10.0)));
        assert!(b.allow(at(10.0)));
        assert!(b.allow(at(10.0)));
        assert!(!b.allow(at(10.0)));
        // Release in CLOSED does nothing.
        b.reset();
        b.release(at(10.0));
        assert_eq!(b.state(at(10.0)), State::Closed);
    }

    #[test]
    fn records_while_open_are_ignored() {
        let mut b = Breaker::new(count_cfg(2, 2)).unwrap();
        b.record(true, 0.0, at(0.0));
        b.record(true, 0.0, at(0.0));
        b.record(false, 0.0, at(1.0));
        b.record(true, 5.0, at(1.0));
        let m = b.metrics(at(1.0));
        assert_eq!(
            (m.state, m.calls, m.failures, m.slow_calls),
            (State::Open, 2, 2, 0)
        );
    }

    #[test]
    fn failure_count_threshold_ignores_minimum_calls() {
        let cfg = Config {
            failure_count_threshold: Some(2),
            ..count_cfg(100, 100)
        };
        let mut b = Breaker::new(cfg).unwrap();
        b.record(false, 0.0, at(0.0));
        b.record(true, 0.0, at(0.0));
        assert_eq!(b.state(at(0.0)), State::Closed);
        b.record(true, 0.0, at(0.0));
        assert_eq!(b.state(at(0.0)), State::Open);
    }

    #[test]
    fn reset_clears_everything() {
        let mut b = Breaker::new(count_cfg(2, 2)).unwrap();
        b.force_open(at(0.0));
        assert!(!b.allow(at(0.0)));
        b.reset();
        let m = b.metrics(at(0.0));
        assert_eq!((m.state, m.calls, m.rejected), (State::Closed, 0, 0));
        assert!(b.allow(at(0.0)));
    }

    #[test]
    fn acquire_reports_retry_after() {
        let mut b = Breaker::new(count_cfg(2, 2)).unwrap();
        assert_eq!(b.acquire(at(0.0)), Ok(()));
        b.force_open(at(0.0));
        assert_eq!(b.acquire(at(4.0)), Err(6.0));
        assert_eq!(b.acquire(at(10.0)), Ok(()));
    }

    #[test]
    fn zero_wait_half_opens_at_once() {
        let cfg = Config {
            wait_open: 0.0,
            ..count_cfg(1, 1)
        };
        let mut b = Breaker::new(cfg).unwrap();
        b.record(true, 0.0, at(5.0));
        assert_eq!(b.state(at(5.0)), State::HalfOpen);
    }

    #[test]
    fn jitter_stays_in_bounds_and_is_reproducible() {
        let cfg = Config {
            jitter: 0.5,
            seed: Some(42),
            ..count_cfg(1, 1)
        };
        let mut a = Breaker::new(cfg.clone()).unwrap();
        let mut b = Breaker::new(cfg).unwrap();
        let mut seen = Vec::new();
        for i in 0..200 {
            let t = f64::from(i) * 100.0;
            a.force_open(at(t));
            b.force_open(at(t));
            let ra = a.retry_after(at(t));
            assert_eq!(ra, b.retry_after(at(t)));
            assert!((10.0..15.0).contains(&ra), "{ra}");
            seen.push(ra);
        }
        let spread = seen.iter().cloned().fold(f64::MIN, f64::max)
            - seen.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 2.0, "jitter should spread the waits, got {spread}");
    }

    #[test]
    fn time_window_slides_and_expires_buckets() {
        // 10 s window, 1 s buckets, rates from 4 calls.
        let mut b = Breaker::new(time_cfg(10, 1.0, 4)).unwrap();
        b.record(true, 0.0, at(100.0));
        b.record(true, 0.0, at(101.5));
        b.record(false, 0.0, at(105.0));
        let m = b.metrics(at(109.9));
        assert_eq!((m.calls, m.failures, m.failure_rate), (3, 2, -1.0));
        // At 110.0 the bucket of second 100 leaves the window.
        let m = b.metrics(at(110.0));
        assert_eq!((m.calls, m.failures), (2, 1));
        b.record(false, 0.0, at(110.5));
        b.record(false, 0.0, at(110.6));
        let m = b.metrics(at(110.6));
        assert_eq!((m.calls, m.failures, m.failure_rate), (4, 1, 25.0));
        assert_eq!(m.state, State::Closed);
        // A long gap empties the window at once.
        let m = b.metrics(at(1000.0));
        assert_eq!((m.calls, m.failures), (0, 0));
        // Failures in the new window open it.
        for _ in 0..4 {
            b.record(true, 0.0, at(1001.0));
        }
        assert_eq!(b.state(at(1001.0)), State::Open);
    }

    #[test]
    fn time_window_does_not_cap_minimum_calls() {
        let mut b = Breaker::new(time_cfg(2, 1.0, 5)).unwrap();
        for _ in 0..4 {
            b.record(true, 0.0, at(0.0));
        }
        assert_eq!(b.state(at(0.0)), State::Closed);
        b.record(true, 0.0, at(0.0));
        assert_eq!(b.state(at(0.0)), State::Open);
    }

    #[test]
    fn time_window_with_fractional_buckets() {
        // 1 s window in 0.25 s buckets: 4 buckets.
        let mut b = Breaker::new(time_cfg(1, 0.25, 100)).unwrap();
        b.record(true, 0.0, at(0.0));
        b.record(true, 0.0, at(0.3));
        b.record(false, 0.0, at(0.9));
        assert_eq!(b.metrics(at(0.99)).calls, 3);
        assert_eq!(b.metrics(at(1.0)).calls, 2);
        assert_eq!(b.metrics(at(1.25)).calls, 1);
        assert_eq!(b.metrics(at(1.5)).calls, 1);
        assert_eq!(b.metrics(at(1.75)).calls, 0);
        // Time never goes back: an older `now` lands in the newest bucket.
        b.record(true, 0.0, at(0.0));
        assert_eq!(b.metrics(at(2.0)).calls, 1);
        assert_eq!(b.metrics(at(2.75)).calls, 0);
    }

    #[test]
    fn time_window_clears_on_close_and_keeps_counting_after() {
        let mut b = Breaker::new(time_cfg(10, 1.0, 2)).unwrap();
        b.record(true, 0.0, at(0.0));
        b.record(true, 0.0, at(0.0));
        assert_eq!(b.state(at(0.0)), State::Open);
        assert_eq!(b.state(at(10.0)), State::HalfOpen);
        for _ in 0..3 {
            assert!(b.allow(at(10.0)));
            b.record(false, 0.0, at(10.0));
        }
        let m = b.metrics(at(10.0));
        assert_eq!((m.state, m.calls), (State::Closed, 0));
        // Stale buckets of the old generation must not be subtracted later.
        b.record(false, 0.0, at(11.0));
        assert_eq!(b.metrics(at(19.0)).calls, 1);
        assert_eq!(b.metrics(at(21.0)).calls, 0);
    }

    #[test]
    fn bucket_count_rounds_near_integers() {
        assert_eq!(bucket_count(3, 0.1), 30.0);
        assert_eq!(bucket_count(10, 1.0), 10.0);
        assert_eq!(bucket_count(10, 3.0), 4.0);
        assert_eq!(bucket_count(1, 1.0), 1.0);
    }

    #[test]
    fn config_validation_names_the_argument() {
        let bad: Vec<(Config, &str)> = vec![
            (
                Config {
                    failure_rate_threshold: 0.0,
                    ..Config::default()
                },
                "failure_rate_threshold",
            ),
            (
                Config {
                    failure_rate_threshold: 100.5,
                    ..Config::default()
                },
                "failure_rate_threshold",
            ),
            (
                Config {
                    slow_call_rate_threshold: f64::NAN,
                    ..Config::default()
                },
                "slow_call_rate_threshold",
            ),
            (
                Config {
                    slow_call_duration: -1.0,
                    ..Config::default()
                },
                "slow_call_duration",
            ),
            (
                Config {
                    window_size: 0,
                    ..Config::default()
                },
                "window_size",
            ),
            (
                Config {
                    window_size: 2_000_000,
                    ..Config::default()
                },
                "window_size",
            ),
            (
                Config {
                    minimum_calls: 0,
                    ..Config::default()
                },
                "minimum_calls",
            ),
            (
                Config {
                    wait_open: f64::INFINITY,
                    ..Config::default()
                },
                "wait_open",
            ),
            (
                Config {
                    jitter: 1.5,
                    ..Config::default()
                },
                "jitter",
            ),
            (
                Config {
                    half_open_calls: -3,
                    ..Config::default()
                },
                "half_open_calls",
            ),
            (
                Config {
                    bucket_width: 0.0,
                    ..Config::default()
                },
                "bucket_width",
            ),
            (
                Config {
                    window_kind: WindowKind::Time,
                    window_size: 5,
                    bucket_width: 6.0,
                    ..Config::default()
                },
                "bucket_width",
            ),
            (
                Config {
                    window_kind: WindowKind::Time,
                    window_size: 5,
                    bucket_width: 1e-9,
                    ..Config::default()
                },
                "bucket_width",
            ),
            (
                Config {
                    failure_count_threshold: Some(0),
                    ..Config::default()
                },
                "failure_count_threshold",
            ),
        ];
        for (cfg, what) in bad {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(what), "{err} should name {what}");
        }
        assert!(Config::default().validate().is_ok());
        assert!(Config {
            wait_open: 0.0,
            jitter: 1.0,
            ..Config::default()
        }
        .validate()
        .is_ok());
        // bucket_width is only bounded by window_size for time windows.
        assert!(Config {
            window_size: 5,
            bucket_width: 6.0,
            ..Config::default()
        }
        .validate()
        .is_ok());
    }
}
