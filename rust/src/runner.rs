//! The worker loop's plain path, run natively: a batch of tasks from start to finish.
//!
//! Most attempts on the hot path are "plain": an `async def` handler with no per-type
//! concurrency limit, no trace context and a closed (or no) breaker, whose coroutine finishes at
//! its first step or soon after. For those, everything the Python worker loop does per task is
//! bookkeeping around one `await`: the ledger's `begin`, setting the current-task context
//! variable, calling the handler, the clock, the ledger's `succeed`. `TaskRunner.run` does all of
//! it for a batch in one native call and drives each handler's coroutine one step with
//! `PyIter_Send`, the call `await` itself makes.
//!
//! The first task that is not plain, or whose coroutine does not finish at its first step (it
//! suspended, raised, or returned something that is not plain JSON), ends the call: the runner
//! hands the Python loop an awaitable for the rest of that attempt (`take`), and the loop goes on
//! as if it had called the handler itself: it awaits it under the same timeout, cancellation and
//! error handling as any attempt. Tasks that were not begun are left for the Python path whole.
//! So the native path changes how fast a plain attempt runs, never what happens to it.

use crate::ledger::{Layout, PyTypeLedger, NOT_QUEUED, STARTED};
use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyType};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Where a handler's coroutine got to in its first step.
enum Step<'py> {
    /// It returned this value.
    Returned(Bound<'py, PyAny>),
    /// The rest of the attempt, for the Python loop to await.
    Pending(Bound<'py, PyAny>),
}

/// Runs batches of plain attempts natively for one worker pool.
#[pyclass(frozen, module = "hulk._native", name = "TaskRunner")]
pub struct PyTaskRunner {
    layout: Layout,
    current: Py<PyAny>,
    clock: Option<Py<PyAny>>,
    check_result: Py<PyAny>,
    settle: Py<PyAny>,
    resumed: Py<PyAny>,
    raised: Py<PyAny>,
    pending: Mutex<Option<Py<PyAny>>>,
    /// The task whose handler `run` is calling (NULL otherwise): borrowed, never dereferenced
    /// but by `running`, which can only run while that call is under way and `items` holds it.
    running: AtomicPtr<ffi::PyObject>,
    /// The index of the task `run` is at (for `position`).
    position: AtomicUsize,
}

/// The handler of a task type, when its attempts may run here.
struct Plain<'py> {
    runtime: Bound<'py, PyAny>,
    ledger: Bound<'py, PyTypeLedger>,
    handler: Option<Bound<'py, PyAny>>,
}

/// Whether `value` is None or exactly a str, int, float or bool: JSON without checking.
#[inline]
fn is_scalar(value: &Bound<'_, PyAny>) -> bool {
    let p = value.as_ptr();
    // SAFETY: `p` is a live object; these macros only read its type.
    unsafe {
        p == ffi::Py_None()
            || ffi::PyUnicode_CheckExact(p) != 0
            || ffi::PyLong_CheckExact(p) != 0
            || ffi::PyFloat_CheckExact(p) != 0
            || ffi::PyBool_Check(p) != 0
    }
}

impl PyTaskRunner {
    /// Monotonic seconds from the pool's clock (the native one when it has none of its own).
    #[inline]
    fn now(&self, py: Python<'_>) -> PyResult<f64> {
        match &self.clock {
            None => Ok(crate::clock::monotonic()),
            Some(clock) => clock.call0(py)?.extract::<f64>(py),
        }
    }

    /// How tasks of `runtime` (a task's `_rt`) run: their ledger, and their handler when their
    /// attempts may run here (called directly, no concurrency limit).
    fn plain<'py>(runtime: &Bound<'py, PyAny>) -> PyResult<Plain<'py>> {
        let py = runtime.py();
        let ledger = runtime
            .getattr(pyo3::intern!(py, "ledger"))?
            .cast_into::<PyTypeLedger>()?;
        let direct = runtime.getattr(pyo3::intern!(py, "direct"))?;
        let limit = runtime
            .getattr(pyo3::intern!(py, "limit"))?
            .extract::<i64>()?;
        Ok(Plain {
            runtime: runtime.clone(),
            ledger,
            handler: (!direct.is_none() && limit == 0).then_some(direct),
        })
    }

    /// Drives a handler's return value one step: a coroutine is sent None, as `await` would.
    fn step<'py>(&self, made: Bound<'py, PyAny>) -> PyResult<Step<'py>> {
        let py = made.py();
        // SAFETY: `made` is a live object; the macro only reads its type.
        if unsafe { ffi::PyCoro_CheckExact(made.as_ptr()) } == 0 {
            // Some other awaitable (or not one at all: `await` will say so).
            return Ok(Step::Pending(made));
        }
        let mut out: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: `made` is a live coroutine and None a live object; PyIter_Send stores a new
        // reference in `out` when it returns PYGEN_RETURN or PYGEN_NEXT and sets an exception
        // (leaving `out` NULL) when it returns PYGEN_ERROR.
        let sent = unsafe { ffi::PyIter_Send(made.as_ptr(), ffi::Py_None(), &mut out) };
        match sent {
            ffi::PySendResult::PYGEN_RETURN => {
                // SAFETY: a new reference (see above).
                Ok(Step::Returned(unsafe { Bound::from_owned_ptr(py, out) }))
            }
            ffi::PySendResult::PYGEN_NEXT => {
                // SAFETY: a new reference (see above): what the coroutine awaits.
                let yielded = unsafe { Bound::from_owned_ptr(py, out) };
                Ok(Step::Pending(self.resumed.bind(py).call1((made, yielded))?))
            }
            ffi::PySendResult::PYGEN_ERROR => {
                Ok(Step::Pending(self.raise_later(PyErr::fetch(py), py)?))
            }
        }
    }

    /// The attempt of a begun `task`: sets the current task, calls the handler, drives its
    /// coroutine one step and, when it returned plain JSON, succeeds the task.
    ///
    /// Returns Ok((time it ended, whether it has a delivery to settle)) when it succeeded, or
    /// Err(the rest of the attempt to await).
    fn attempt<'py>(
        &self,
        task: &Bound<'py, PyAny>,
        handler: &Bound<'py, PyAny>,
        ledger: &PyTypeLedger,
        offset: f64,
    ) -> PyResult<Result<(f64, bool), Bound<'py, PyAny>>> {
        let py = task.py();
        // The current task, for `hulk.context`; never reset, as on the Python path.
        // SAFETY: both are live objects; PyContextVar_Set returns a new token reference
        // (released at once: nothing resets the variable) or NULL with an exception set.
        unsafe {
            let token = ffi::PyContextVar_Set(self.current.as_ptr(), task.as_ptr());
            if token.is_null() {
                return Err(PyErr::fetch(py));
            }
            ffi::Py_DECREF(token);
        }
        let payload = self.layout.record(task)?.get(crate::ledger::PAYLOAD)?;
        self.running.store(task.as_ptr(), Ordering::Relaxed);
        let step = match handler.call1((payload,)) {
            Ok(made) => self.step(made),
            Err(err) => self.raise_later(err, py).map(Step::Pending),
        };
        self.running.store(std::ptr::null_mut(), Ordering::Relaxed);
        let result = match step? {
            Step::Returned(result) => result,
            Step::Pending(rest) => return Ok(Err(rest)),
        };
        if !is_scalar(&result) {
            if let Err(err) = self.check_result.bind(py).call1((&result,)) {
                return Ok(Err(self.raise_later(err, py)?));
            }
        }
        let now = self.now(py)?;
        let delivery = ledger.succeed(task, &result, now, offset)?;
        Ok(Ok((now, delivery)))
    }

    /// An awaitable that raises `err` (with its traceback) where the Python loop awaits it.
    fn raise_later<'py>(&self, err: PyErr, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.raised.bind(py).call1((err.into_value(py),))
    }
}

#[pymethods]
impl PyTaskRunner {
    #[new]
    #[pyo3(signature = (*, task_class, current, clock, check_result, settle, resumed, raised))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        task_class: &Bound<'_, PyType>,
        current: Py<PyAny>,
        clock: Option<Py<PyAny>>,
        check_result: Py<PyAny>,
        settle: Py<PyAny>,
        resumed: Py<PyAny>,
        raised: Py<PyAny>,
    ) -> PyResult<Self> {
        Ok(Self {
            layout: Layout::of(task_class)?,
            current,
            clock,
            check_result,
            settle,
            resumed,
            raised,
            pending: Mutex::new(None),
            running: AtomicPtr::new(std::ptr::null_mut()),
            position: AtomicUsize::new(0),
        })
    }

    /// Runs the plain attempts at the front of `items` (tasks just taken from the queue).
    ///
    /// Returns how many tasks it is done with: each of them succeeded (recorded, counted, its
    /// delivery settled) or was no longer queued. When that is fewer than all, the task at that
    /// index is either not begun (`take` returns None: the Python path runs it) or begun and
    /// its handler called (`take` returns the rest of the attempt to await).
    ///
    /// An error before a task is begun leaves it to the Python path (which meets the error in its
    /// own code); an error once it is begun becomes that attempt's error, raised where its rest is
    /// awaited. Only a delivery's `settle` raising (a BaseException: `_settle` logs the others)
    /// leaves `run` with an error: `position()` is then the task it settled.
    fn run(&self, items: &Bound<'_, PyList>, offset: f64) -> PyResult<usize> {
        let py = items.py();
        let count = items.len();
        let mut now = self.now(py)?;
        let mut plain: Option<Plain<'_>> = None;
        for index in 0..count {
            self.position.store(index, Ordering::Relaxed);
            let task = items.get_item(index)?;
            let Ok(record) = self.layout.record(&task) else {
                return Ok(index); // not a task record: the Python path says what is wrong
            };
            let Ok(runtime) = record.get(crate::ledger::RT) else {
                return Ok(index);
            };
            if plain.as_ref().is_none_or(|p| !p.runtime.is(&runtime)) {
                match Self::plain(&runtime) {
                    Ok(found) => plain = Some(found),
                    Err(_) => return Ok(index),
                }
            }
            let Some(Plain {
                ledger,
                handler: Some(handler),
                ..
            }) = plain.as_ref()
            else {
                return Ok(index);
            };
            if !record.get(crate::ledger::TRACE).is_ok_and(|t| t.is_none()) {
                return Ok(index); // traced: the Python path makes its span
            }
            let ledger = ledger.get();
            match ledger.start(&task, now, offset, true) {
                Ok(STARTED) => {}
                Ok(NOT_QUEUED) => continue, // cancelled while queued: already recorded
                // A breaker that is not closed (NOT_CLOSED), or an error: the Python path asks.
                _ => return Ok(index),
            }
            let finished = self
                .attempt(&task, handler, ledger, offset)
                .or_else(|err| self.raise_later(err, py).map(Err));
            match finished? {
                Ok((at, delivery)) => {
                    now = at;
                    if delivery {
                        self.settle.bind(py).call1((&task,))?;
                    }
                }
                Err(rest) => {
                    *self.pending.lock() = Some(rest.unbind());
                    return Ok(index);
                }
            }
        }
        Ok(count)
    }

    /// The rest of the attempt `run` stopped at, once (None when it stopped before beginning it).
    fn take(&self) -> Option<Py<PyAny>> {
        self.pending.lock().take()
    }

    /// The index in `items` of the task the last `run` was at when it returned or raised.
    fn position(&self) -> usize {
        self.position.load(Ordering::Relaxed)
    }

    /// The task whose handler `run` is calling right now (None when it is calling none): what
    /// a handler that asks the pool about its own task, before its first await, finds.
    fn running(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let task = self.running.load(Ordering::Relaxed);
        // SAFETY: non-NULL only while `run` calls that task's handler (cleared right after),
        // and the task is alive meanwhile (in `items`); reading it needs the GIL we hold, so
        // `run` cannot clear it and let the task go while we take a reference.
        (!task.is_null()).then(|| unsafe { Py::from_borrowed_ptr(py, task) })
    }
}

/// Adds `TaskRunner` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTaskRunner>()
}
