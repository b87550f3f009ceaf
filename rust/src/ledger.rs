//! The per-type ledger of the worker pool's hot path: one native call per task transition.
//!
//! Accepting, starting and finishing a task each touch several native objects (the queue, a
//! counter, a histogram, the breaker). Called one by one from Python, each costs a method lookup,
//! an argument parse and a trip through the interpreter; `TypeLedger` holds references to a task
//! type's queue, counters, histograms and breaker and does each transition's bookkeeping in one
//! call. The objects stay the ones Python reads (`metrics.for_type(...).started`, the breaker in
//! `pool.breakers`), so nothing else changes.
//!
//! The bookkeeping itself is plain Rust (`begin`, `succeed`) tested without Python.

use crate::breaker::{Breaker, PyCircuitBreaker};
use crate::counters::{AtomicCounter, AtomicHistogram, PyCounter, PyHistogram};
use crate::queue::PyBoundedQueue;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Starts an attempt: asks the breaker (if any); when allowed, counts the start and records how
/// long the task waited. Returns whether the attempt may run.
#[inline]
pub fn begin(
    breaker: Option<&Mutex<Breaker>>,
    started: &AtomicCounter,
    latency: &AtomicHistogram,
    now: f64,
    waited: f64,
) -> bool {
    if let Some(breaker) = breaker {
        if !breaker.lock().allow(Some(now)) {
            return false;
        }
    }
    started.add(1);
    // A wall clock stepped back between submit and start: the wait was at least nothing.
    latency.observe(waited.max(0.0));
    true
}

/// Ends an attempt that succeeded after `duration` seconds: the breaker's evidence (unless the
/// dependency was not called: `cached`), the success count and the duration histogram.
#[inline]
pub fn succeed(
    breaker: Option<&Mutex<Breaker>>,
    succeeded: &AtomicCounter,
    durations: &AtomicHistogram,
    duration: f64,
    now: f64,
    cached: bool,
) {
    let duration = duration.max(0.0);
    if let Some(breaker) = breaker {
        let mut breaker = breaker.lock();
        if cached {
            breaker.release(Some(now));
        } else {
            breaker.record(false, duration, Some(now));
        }
    }
    succeeded.add(1);
    durations.observe(duration);
}

fn check_time(what: &str, value: f64) -> PyResult<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(PyValueError::new_err(format!(
            "TypeLedger.{what} must be a finite number of seconds, got {value}"
        )))
    }
}

/// One task type's hot-path bookkeeping: queue push, counters, histograms and breaker, fused.
#[pyclass(frozen, module = "hulk._native", name = "TypeLedger")]
pub struct PyTypeLedger {
    queue: Py<PyBoundedQueue>,
    submitted: Py<PyCounter>,
    started: Py<PyCounter>,
    succeeded: Py<PyCounter>,
    latency: Py<PyHistogram>,
    duration: Py<PyHistogram>,
    breaker: Option<Py<PyCircuitBreaker>>,
}

impl PyTypeLedger {
    #[inline]
    fn breaker(&self) -> Option<&Mutex<Breaker>> {
        self.breaker.as_ref().map(|b| &b.get().inner)
    }
}

#[pymethods]
impl PyTypeLedger {
    #[new]
    #[pyo3(signature = (*, queue, submitted, started, succeeded, latency, duration, breaker=None))]
    fn new(
        queue: Py<PyBoundedQueue>,
        submitted: Py<PyCounter>,
        started: Py<PyCounter>,
        succeeded: Py<PyCounter>,
        latency: Py<PyHistogram>,
        duration: Py<PyHistogram>,
        breaker: Option<Py<PyCircuitBreaker>>,
    ) -> Self {
        Self {
            queue,
            submitted,
            started,
            succeeded,
            latency,
            duration,
            breaker,
        }
    }

    /// Appends `task` to the queue and counts it submitted; False (nothing counted) when full.
    ///
    /// Raises QueueClosed when the queue is closed.
    fn push(&self, py: Python<'_>, task: Py<PyAny>) -> PyResult<bool> {
        let pushed = self.queue.get().push_one(py, task)?;
        if pushed {
            self.submitted.get().inner.add(1);
        }
        Ok(pushed)
    }

    /// Starts an attempt at monotonic `now` after `waited` seconds in the queue.
    ///
    /// Returns False when the breaker refuses it (nothing else is counted).
    fn begin(&self, now: f64, waited: f64) -> PyResult<bool> {
        let now = check_time("begin(now)", now)?;
        let waited = check_time("begin(waited)", waited)?;
        Ok(begin(
            self.breaker(),
            &self.started.get().inner,
            &self.latency.get().inner,
            now,
            waited,
        ))
    }

    /// Ends an attempt that succeeded after `duration` seconds, at monotonic `now`.
    #[pyo3(signature = (duration, now, cached=false))]
    fn succeed(&self, duration: f64, now: f64, cached: bool) -> PyResult<()> {
        let duration = check_time("succeed(duration)", duration)?;
        let now = check_time("succeed(now)", now)?;
        succeed(
            self.breaker(),
            &self.succeeded.get().inner,
            &self.duration.get().inner,
            duration,
            now,
            cached,
        );
        Ok(())
    }
}

/// Adds `TypeLedger` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTypeLedger>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{Config, WindowKind};

    fn breaker() -> Mutex<Breaker> {
        let cfg = Config {
            window_kind: WindowKind::Count,
            window_size: 2,
            minimum_calls: 2,
            failure_rate_threshold: 50.0,
            wait_open: 10.0,
            ..Config::default()
        };
        Mutex::new(Breaker::new(cfg).unwrap())
    }

    fn histogram() -> AtomicHistogram {
        AtomicHistogram::new(vec![0.001, 1.0]).unwrap()
    }

    #[test]
    fn begin_counts_and_observes_when_allowed() {
        let (started, latency) = (AtomicCounter::default(), histogram());
        assert!(begin(None, &started, &latency, 0.0, 0.5));
        assert!(begin(None, &started, &latency, 0.0, -1.0));
        assert_eq!(started.get(), 2);
        let (_, counts, sum, count) = latency.snapshot();
        assert_eq!(counts, vec![1, 2, 2]);
        assert_eq!(count, 2);
        assert!((sum - 0.5).abs() < 1e-12);
    }

    #[test]
    fn an_open_breaker_refuses_and_nothing_is_counted() {
        let b = breaker();
        b.lock().force_open(Some(0.0));
        let (started, latency) = (AtomicCounter::default(), histogram());
        assert!(!begin(Some(&b), &started, &latency, 1.0, 0.0));
        assert_eq!(started.get(), 0);
        assert_eq!(latency.snapshot().3, 0);
        // After the wait it half-opens and lets a probe through.
        assert!(begin(Some(&b), &started, &latency, 11.0, 0.0));
        assert_eq!(started.get(), 1);
    }

    #[test]
    fn succeed_records_evidence_unless_cached() {
        let b = breaker();
        let (succeeded, durations) = (AtomicCounter::default(), histogram());
        succeed(Some(&b), &succeeded, &durations, 0.5, 1.0, false);
        succeed(Some(&b), &succeeded, &durations, 2.0, 1.0, true);
        assert_eq!(succeeded.get(), 2);
        let (_, counts, _, count) = durations.snapshot();
        assert_eq!(counts, vec![0, 1, 2]);
        assert_eq!(count, 2);
        let m = b.lock().metrics(Some(1.0));
        assert_eq!(m.calls, 1);
        assert_eq!(m.failures, 0);
    }
}
