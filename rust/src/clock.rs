//! The monotonic clock shared by the native core and the Python layer.
//!
//! It reads `CLOCK_MONOTONIC`, the clock behind Python's `time.monotonic()` on Linux, so a `now`
//! taken in Python and the native default agree. Every time-dependent method takes an optional
//! `now` so tests can drive time by hand.

use pyo3::prelude::*;

/// Seconds on `clock` (a `clock_gettime` clock id), 0.0 if the clock cannot be read.
#[inline]
fn read(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks passed here (CLOCK_MONOTONIC,
    // CLOCK_REALTIME) are always available on Linux and the call only writes into `ts`.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Monotonic seconds, comparable with Python's `time.monotonic()`.
#[inline]
pub fn monotonic() -> f64 {
    read(libc::CLOCK_MONOTONIC)
}

/// Unix time in seconds (`CLOCK_REALTIME`, the clock behind Python's `time.time()`).
#[inline]
pub fn realtime() -> f64 {
    read(libc::CLOCK_REALTIME)
}

/// Resolves an optional caller-provided `now` against the native clock.
#[inline]
pub fn resolve(now: Option<f64>) -> f64 {
    now.unwrap_or_else(monotonic)
}

/// Returns monotonic seconds from the clock that native methods use when `now` is omitted.
#[pyfunction(name = "monotonic")]
fn py_monotonic() -> f64 {
    monotonic()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_monotonic, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_never_goes_back() {
        let a = super::monotonic();
        let b = super::monotonic();
        assert!(a > 0.0);
        assert!(b >= a);
    }

    #[test]
    fn realtime_is_unix_time() {
        // After 2020-01-01 and before 2200-01-01.
        let now = super::realtime();
        assert!(now > 1_577_836_800.0 && now < 7_258_118_400.0);
    }
}
