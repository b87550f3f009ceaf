//! Reading batches of task events natively.
//!
//! A batch is a list of `(task, previous, status, at)` tuples; a status store wants only some of
//! them (the terminal ones, say). Picking them in a Python loop costs a few bytecodes per event,
//! three events per task; `tasks_entering` does it in one call that compares statuses by identity
//! (statuses are enum members: one object each).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// Keeps the first item of each event whose third item is one of `wanted` (by `same`).
pub fn select<E, T, S>(
    events: impl IntoIterator<Item = E>,
    wanted: &[S],
    parts: impl Fn(&E) -> Option<(T, S)>,
    same: impl Fn(&S, &S) -> bool,
) -> Result<Vec<T>, usize> {
    let mut out = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        let (task, status) = parts(&event).ok_or(index)?;
        if wanted.iter().any(|w| same(w, &status)) {
            out.push(task);
        }
    }
    Ok(out)
}

/// The tasks of the events in `events` whose status (third item) is one of `statuses`, in order.
#[pyfunction]
pub fn tasks_entering<'py>(
    events: &Bound<'py, PyAny>,
    statuses: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyList>> {
    let py = events.py();
    let wanted: Vec<Bound<'py, PyAny>> = statuses.iter().collect();
    let parts = |event: &Bound<'py, PyAny>| {
        let event = event.cast::<PyTuple>().ok()?;
        if event.len() < 3 {
            return None;
        }
        // Borrowed: the tuple keeps both alive; only the tasks picked get a reference.
        let status = event.get_borrowed_item(2).ok()?.as_ptr();
        Some((event.get_borrowed_item(0).ok()?.as_ptr(), status))
    };
    let wanted: Vec<*mut pyo3::ffi::PyObject> = wanted.iter().map(Bound::as_ptr).collect();
    let same = |a: &*mut pyo3::ffi::PyObject, b: &*mut pyo3::ffi::PyObject| a == b;
    // Any other iterable is read first and kept until the picked tasks have references.
    let items: Vec<Bound<'py, PyAny>>;
    let picked = if let Ok(list) = events.cast::<PyList>() {
        select(list.iter(), &wanted, parts, same)
    } else {
        items = events.try_iter()?.collect::<PyResult<_>>()?;
        select(items.iter().cloned(), &wanted, parts, same)
    };
    match picked {
        // SAFETY: each pointer is an item of a tuple that `events` (or `items`) still holds, and
        // nothing has run Python code since it was read.
        Ok(tasks) => PyList::new(
            py,
            tasks
                .into_iter()
                .map(|task| unsafe { Bound::from_borrowed_ptr(py, task) }),
        ),
        Err(index) => Err(PyTypeError::new_err(format!(
            "tasks_entering: event {index} is not a (task, previous, status, at) tuple"
        ))),
    }
}

/// The tasks in `tasks` whose `status` attribute is none of `statuses` (by identity), in order.
#[pyfunction]
pub fn tasks_not_in<'py>(
    tasks: &Bound<'py, PyList>,
    statuses: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyList>> {
    let py = tasks.py();
    let name = pyo3::intern!(py, "status");
    let out = PyList::empty(py);
    for task in tasks.iter() {
        let status = task.getattr(name)?;
        if !statuses.iter().any(|s| s.is(&status)) {
            out.append(task)?;
        }
    }
    Ok(out)
}

/// Adds `tasks_entering` and `tasks_not_in` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(tasks_entering, m)?)?;
    m.add_function(wrap_pyfunction!(tasks_not_in, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_order_and_matching_statuses() {
        let events = [("a", 1), ("b", 2), ("c", 3), ("d", 1)];
        let got = select(events, &[1, 3], |e| Some(*e), |x, y| x == y).unwrap();
        assert_eq!(got, vec!["a", "c", "d"]);
    }

    #[test]
    fn select_reports_the_first_malformed_event() {
        let events = [Some(("a", 1)), None, Some(("c", 1))];
        let got = select(events, &[1], |e| *e, |x, y| x == y);
        assert_eq!(got, Err(1));
    }
}
