//! Task events, buffered and read natively.
//!
//! Every status change is a `(task, previous, status, at)` event. The pool buffers them on the
//! hot path (three per task) and hands each batch to the status store and the event sink once per
//! event-loop turn. `EventBuffer` keeps them as four references each, with no tuple: a tuple per
//! event was three garbage-collected allocations per task, enough to set off a young-generation
//! collection every loop turn at full speed. `EventBuffer.take()` gives the batch as an
//! `EventBatch`, a read-only sequence of `(task, previous, status, at)` tuples made when read, so
//! sinks written in Python see the same events as ever; native readers (`tasks_entering`, the
//! NATS record encoder) read the references directly through `each_event`.
//!
//! `tasks_entering` picks the tasks whose status is one of a few (statuses are enum members: one
//! object each, compared by identity) in one call.

use parking_lot::Mutex;
use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PySlice, PyTuple};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One transition: what its tuple holds.
pub(crate) struct Event {
    task: Py<PyAny>,
    previous: Py<PyAny>,
    status: Py<PyAny>,
    at: Py<PyAny>,
}

impl Event {
    fn tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                self.task.bind(py),
                self.previous.bind(py),
                self.status.bind(py),
                self.at.bind(py),
            ],
        )
    }
}

/// Where the pool buffers events between flushes.
#[pyclass(frozen, module = "hulk._native", name = "EventBuffer")]
pub struct PyEventBuffer {
    events: Mutex<Vec<Event>>,
}

impl PyEventBuffer {
    /// Appends one event (four new references, no allocation but the buffer's own growth).
    #[inline]
    pub(crate) fn push(
        &self,
        task: &Bound<'_, PyAny>,
        previous: &Bound<'_, PyAny>,
        status: &Bound<'_, PyAny>,
        at: &Bound<'_, PyAny>,
    ) {
        self.events.lock().push(Event {
            task: task.clone().unbind(),
            previous: previous.clone().unbind(),
            status: status.clone().unbind(),
            at: at.clone().unbind(),
        });
    }
}

#[pymethods]
impl PyEventBuffer {
    #[new]
    fn new() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
        }
    }

    /// Appends the event `(task, previous, status, at)`.
    fn append(
        &self,
        task: &Bound<'_, PyAny>,
        previous: &Bound<'_, PyAny>,
        status: &Bound<'_, PyAny>,
        at: &Bound<'_, PyAny>,
    ) {
        self.push(task, previous, status, at);
    }

    /// The buffered events as a batch, in order; the buffer is left empty.
    fn take(&self) -> PyEventBatch {
        let mut events = self.events.lock();
        // The next batch is likely the size of this one: start it with that room.
        let room = events.len();
        PyEventBatch {
            events: std::mem::replace(&mut *events, Vec::with_capacity(room)),
        }
    }

    fn __len__(&self) -> usize {
        self.events.lock().len()
    }
}

/// A batch of events: a read-only sequence of `(task, previous, status, at)` tuples.
#[pyclass(frozen, sequence, module = "hulk._native", name = "EventBatch")]
pub struct PyEventBatch {
    events: Vec<Event>,
}

#[pymethods]
impl PyEventBatch {
    fn __len__(&self) -> usize {
        self.events.len()
    }

    /// The event at `index` (negative counts from the end), or a list of the events in a slice.
    fn __getitem__<'py>(&self, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = index.py();
        if let Ok(slice) = index.cast::<PySlice>() {
            let found = slice.indices(self.events.len() as isize)?;
            let mut out = Vec::with_capacity(found.slicelength);
            let mut at = found.start;
            for _ in 0..found.slicelength {
                out.push(self.events[at as usize].tuple(py)?);
                at += found.step;
            }
            return Ok(PyList::new(py, out)?.into_any());
        }
        let wanted = index.extract::<isize>()?;
        let len = self.events.len() as isize;
        let at = if wanted < 0 { wanted + len } else { wanted };
        if !(0..len).contains(&at) {
            return Err(PyIndexError::new_err(format!(
                "EventBatch index {wanted} out of range for {len} events"
            )));
        }
        Ok(self.events[at as usize].tuple(py)?.into_any())
    }

    fn __iter__(slf: Bound<'_, Self>) -> PyEventBatchIterator {
        PyEventBatchIterator {
            batch: slf.unbind(),
            next: AtomicUsize::new(0),
        }
    }

    fn __repr__(&self) -> String {
        format!("<EventBatch of {} events>", self.events.len())
    }
}

/// Iterates an `EventBatch`'s tuples.
#[pyclass(frozen, module = "hulk._native", name = "EventBatchIterator")]
pub struct PyEventBatchIterator {
    batch: Py<PyEventBatch>,
    next: AtomicUsize,
}

#[pymethods]
impl PyEventBatchIterator {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        match self.batch.get().events.get(index) {
            Some(event) => Ok(Some(event.tuple(py)?)),
            None => Ok(None),
        }
    }
}

/// Calls `f(task, previous, status, at)` for each event of `events`, in order: an `EventBatch`
/// read in place, any other iterable of `(task, previous, status, at)` tuples item by item.
///
/// `what` names the caller in the error for an item that is not such a tuple.
pub(crate) fn each_event<'py>(
    events: &Bound<'py, PyAny>,
    what: &str,
    mut f: impl FnMut(
        &Bound<'py, PyAny>,
        &Bound<'py, PyAny>,
        &Bound<'py, PyAny>,
        &Bound<'py, PyAny>,
    ) -> PyResult<()>,
) -> PyResult<()> {
    let py = events.py();
    if let Ok(batch) = events.cast::<PyEventBatch>() {
        for event in &batch.get().events {
            f(
                event.task.bind(py),
                event.previous.bind(py),
                event.status.bind(py),
                event.at.bind(py),
            )?;
        }
        return Ok(());
    }
    for (index, event) in events.try_iter()?.enumerate() {
        let event = event?;
        let tuple = match event.cast::<PyTuple>() {
            Ok(tuple) if tuple.len() >= 4 => tuple,
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "{what}: event {index} is not a (task, previous, status, at) tuple"
                )))
            }
        };
        f(
            &tuple.get_item(0)?,
            &tuple.get_item(1)?,
            &tuple.get_item(2)?,
            &tuple.get_item(3)?,
        )?;
    }
    Ok(())
}

/// The tasks of the events in `events` whose status (third item) is one of `statuses`, in order.
#[pyfunction]
pub fn tasks_entering<'py>(
    events: &Bound<'py, PyAny>,
    statuses: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyList>> {
    let wanted: Vec<*mut pyo3::ffi::PyObject> = statuses.iter().map(|s| s.as_ptr()).collect();
    let out = PyList::empty(events.py());
    each_event(events, "tasks_entering", |task, _previous, status, _at| {
        if wanted.contains(&status.as_ptr()) {
            out.append(task)?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// The tasks of the events in `events`, each once (by identity), in order of first appearance.
#[pyfunction]
pub fn distinct_tasks<'py>(events: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(events.py());
    let mut seen = std::collections::HashSet::new();
    each_event(events, "distinct_tasks", |task, _previous, _status, _at| {
        if seen.insert(task.as_ptr() as usize) {
            out.append(task)?;
        }
        Ok(())
    })?;
    Ok(out)
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

/// Adds the event buffer and batch, `tasks_entering`, `distinct_tasks` and `tasks_not_in` to the
/// native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEventBuffer>()?;
    m.add_class::<PyEventBatch>()?;
    m.add_class::<PyEventBatchIterator>()?;
    m.add_function(wrap_pyfunction!(tasks_entering, m)?)?;
    m.add_function(wrap_pyfunction!(distinct_tasks, m)?)?;
    m.add_function(wrap_pyfunction!(tasks_not_in, m)?)?;
    Ok(())
}
