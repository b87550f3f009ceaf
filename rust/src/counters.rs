//! Hot-path counters: atomic counters and fixed-bucket histograms.
//!
//! The hot path bumps them with one relaxed atomic add and the Prometheus collector reads them in
//! bulk at scrape time, so metrics cost the hot path nothing per task beyond that add.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter (plain Rust; used inside other native structures).
#[derive(Debug, Default)]
pub struct AtomicCounter(AtomicU64);

impl AtomicCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    #[inline]
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// A histogram over fixed, increasing upper bounds (plus an implicit `+Inf` bucket).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    /// Creates a histogram; `bounds` must be finite and strictly increasing.
    pub fn new(bounds: Vec<f64>) -> Result<Self, String> {
        if bounds.is_empty() {
            return Err("buckets must hold at least one upper bound".into());
        }
        if bounds.iter().any(|b| !b.is_finite()) {
            return Err("buckets must be finite numbers (+Inf is implicit)".into());
        }
        if bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err("buckets must be strictly increasing".into());
        }
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Ok(Self {
            bounds,
            counts,
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        })
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, value: f64) {
        // Prometheus buckets are inclusive upper bounds: `le`.
        let idx = self.bounds.partition_point(|b| *b < value);
        self.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum_bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + value).to_bits();
            match self.sum_bits.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Upper bounds, cumulative counts (one more than bounds: the last is `+Inf`), sum, count.
    pub fn snapshot(&self) -> (Vec<f64>, Vec<u64>, f64, u64) {
        let mut acc = 0u64;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (
            self.bounds.clone(),
            cumulative,
            f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// An atomic counter that hot-path code bumps and a metrics collector reads at scrape time.
#[pyclass(frozen, module = "hulk._native", name = "Counter")]
#[derive(Debug, Default)]
pub struct PyCounter {
    pub(crate) inner: AtomicCounter,
}

#[pymethods]
impl PyCounter {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Adds `amount` (default 1).
    #[pyo3(signature = (amount=1))]
    fn inc(&self, amount: u64) {
        self.inner.add(amount);
    }

    /// The current value.
    #[getter]
    fn value(&self) -> u64 {
        self.inner.get()
    }

    fn __repr__(&self) -> String {
        format!("Counter(value={})", self.inner.get())
    }
}

/// A fixed-bucket histogram that hot-path code fills and a collector reads at scrape time.
#[pyclass(frozen, module = "hulk._native", name = "Histogram")]
#[derive(Debug)]
pub struct PyHistogram {
    pub(crate) inner: AtomicHistogram,
}

#[pymethods]
impl PyHistogram {
    #[new]
    #[pyo3(signature = (*, buckets))]
    fn new(buckets: Vec<f64>) -> PyResult<Self> {
        AtomicHistogram::new(buckets)
            .map(|inner| Self { inner })
            .map_err(|e| PyValueError::new_err(format!("Histogram(buckets): {e}")))
    }

    /// Records one observation.
    fn observe(&self, value: f64) -> PyResult<()> {
        if value.is_nan() {
            return Err(PyValueError::new_err(
                "Histogram.observe(value): value is NaN",
            ));
        }
        self.inner.observe(value);
        Ok(())
    }

    /// Returns `{"buckets": [...], "counts": [...cumulative, +Inf last], "sum": float, "count": int}`.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (bounds, counts, sum, count) = self.inner.snapshot();
        let d = PyDict::new(py);
        d.set_item("buckets", bounds)?;
        d.set_item("counts", counts)?;
        d.set_item("sum", sum)?;
        d.set_item("count", count)?;
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCounter>()?;
    m.add_class::<PyHistogram>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = AtomicHistogram::new(vec![0.1, 1.0]).unwrap_or_else(|e| panic!("{e}"));
        h.observe(0.1);
        h.observe(0.5);
        h.observe(5.0);
        let (_, counts, sum, count) = h.snapshot();
        assert_eq!(counts, vec![1, 2, 3]);
        assert_eq!(count, 3);
        assert!((sum - 5.6).abs() < 1e-9);
    }

    #[test]
    fn histogram_rejects_bad_bounds() {
        assert!(AtomicHistogram::new(vec![]).is_err());
        assert!(AtomicHistogram::new(vec![1.0, 1.0]).is_err());
        assert!(AtomicHistogram::new(vec![f64::INFINITY]).is_err());
    }

    #[test]
    fn counter_adds_across_threads() {
        let c = std::sync::Arc::new(AtomicCounter::default());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        for h in hs {
            assert!(h.join().is_ok());
        }
        assert_eq!(c.get(), 4000);
    }
}
