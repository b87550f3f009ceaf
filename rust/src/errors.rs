//! The one exception tree of hulk, created here under `hulk.errors` and re-exported by
//! `python/hulk/errors.py`. Errors carry typed attributes (`capacity`, `retry_after`), not only a
//! message, so callers can react without parsing text.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    hulk.errors,
    HulkError,
    PyException,
    "Base class of every error raised by hulk."
);
create_exception!(
    hulk.errors,
    QueueEmpty,
    HulkError,
    "Raised by a non-blocking pop (or a timed-out blocking one) when the queue holds no item."
);
create_exception!(
    hulk.errors,
    QueueFull,
    HulkError,
    "Raised when a queue is at capacity: the backpressure signal. Attribute: `capacity`."
);
create_exception!(
    hulk.errors,
    QueueClosed,
    HulkError,
    "Raised when pushing to a closed queue, or popping from a closed and drained one."
);
create_exception!(
    hulk.errors,
    BreakerOpen,
    HulkError,
    "Raised when a circuit breaker refuses a call. Attribute: `retry_after` (seconds)."
);

/// Builds a `QueueFull` error carrying the queue's capacity.
pub fn queue_full(py: Python<'_>, capacity: usize) -> PyErr {
    let err = QueueFull::new_err(format!("queue full (capacity {capacity}), retry later"));
    // Setting an attribute on a fresh exception instance cannot fail in practice; if it does the
    // error is still raised, only without the attribute.
    let _ = err.value(py).setattr("capacity", capacity);
    err
}

/// Builds a `BreakerOpen` error carrying the breaker name and the seconds until it half-opens.
pub fn breaker_open(py: Python<'_>, name: &str, retry_after: f64) -> PyErr {
    let err = BreakerOpen::new_err(format!(
        "circuit breaker {name:?} is open, retry after {retry_after:.3}s"
    ));
    let _ = err.value(py).setattr("retry_after", retry_after);
    let _ = err.value(py).setattr("name", name);
    err
}

/// Checks that a duration in seconds is finite and not negative.
///
/// `what` names the argument in the error message, e.g. `"BackoffScheduler(base)"`.
pub fn check_duration(what: &str, value: f64) -> PyResult<f64> {
    if value.is_nan() || value.is_infinite() || value < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a finite number of seconds >= 0, got {value}"
        )));
    }
    Ok(value)
}

/// Checks that a duration in seconds is finite and strictly positive.
pub fn check_positive_duration(what: &str, value: f64) -> PyResult<f64> {
    if value.is_nan() || value.is_infinite() || value <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a finite number of seconds > 0, got {value}"
        )));
    }
    Ok(value)
}

/// Checks that a count (capacity, window size, probe count) is at least 1.
pub fn check_count(what: &str, value: usize) -> PyResult<usize> {
    if value == 0 {
        return Err(PyValueError::new_err(format!("{what} must be >= 1, got 0")));
    }
    Ok(value)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HulkError", py.get_type::<HulkError>())?;
    m.add("QueueEmpty", py.get_type::<QueueEmpty>())?;
    m.add("QueueFull", py.get_type::<QueueFull>())?;
    m.add("QueueClosed", py.get_type::<QueueClosed>())?;
    m.add("BreakerOpen", py.get_type::<BreakerOpen>())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked() {
        assert!(check_duration("x", 0.0).is_ok());
        assert!(check_duration("x", 1.5).is_ok());
        assert!(check_duration("x", -1.0).is_err());
        assert!(check_duration("x", f64::NAN).is_err());
        assert!(check_duration("x", f64::INFINITY).is_err());
        assert!(check_positive_duration("x", 0.0).is_err());
        assert!(check_count("x", 0).is_err());
        assert!(check_count("x", 3).is_ok());
    }
}
