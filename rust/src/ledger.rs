//! The per-type ledger of the worker pool's hot path: one native call per task transition.
//!
//! Accepting, starting and finishing a task each touch several native objects (the queue, a
//! counter, a histogram, the breaker). Called one by one from Python, each costs a method lookup,
//! an argument parse and a trip through the interpreter; `TypeLedger` holds references to a task
//! type's queue, counters, histograms and breaker and does each transition's bookkeeping in one
//! call. The objects stay the ones Python reads (`metrics.for_type(...).started`, the breaker in
//! `pool.breakers`), so nothing else changes.
//!
//! It also writes the task record itself: `accept` creates the task (a plain `__slots__` object of
//! the class it was given) with every field set, `begin` and `succeed` move its status, attempt and
//! times, and each appends its transition to the pool's event buffer. Fields are written through
//! the class's own member descriptors (the offsets `PyMember_SetOne` uses), checked once when the
//! ledger is made; every call checks that the task is an instance of that class.
//!
//! The bookkeeping itself is plain Rust (`begin`, `succeed`) tested without Python.

use crate::breaker::{Breaker, PyCircuitBreaker};
use crate::counters::{AtomicCounter, AtomicHistogram, PyCounter, PyHistogram};
use crate::events::PyEventBuffer;
use crate::queue::PyBoundedQueue;
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyType};

/// What `begin` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The attempt may run: its start is counted and its wait observed.
    Started,
    /// The breaker refused it (and counted the refusal); nothing else changed.
    Refused,
    /// Nothing was asked or changed: the caller wanted a closed breaker and this one is not.
    NotClosed,
}

/// Starts an attempt: asks the breaker (if any); when allowed, counts the start and records how
/// long the task waited.
///
/// With `closed_only`, a breaker that is not closed is not asked at all (`NotClosed`): the native
/// runner leaves such a task to the Python path, which asks it and handles a refusal. A closed
/// breaker always allows, and asking it changes nothing, so either way it is asked once.
#[inline]
pub fn begin(
    breaker: Option<&Mutex<Breaker>>,
    started: &AtomicCounter,
    latency: &AtomicHistogram,
    now: f64,
    waited: f64,
    closed_only: bool,
) -> Admission {
    if let Some(breaker) = breaker {
        let mut breaker = breaker.lock();
        if closed_only && !breaker.is_closed() {
            return Admission::NotClosed;
        }
        if !breaker.allow(Some(now)) {
            return Admission::Refused;
        }
    }
    started.add(1);
    // A wall clock stepped back between submit and start: the wait was at least nothing.
    latency.observe(waited.max(0.0));
    Admission::Started
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

// --- the task record ---------------------------------------------------------------------------

/// The fields of the task record the ledger writes, as named in the class's `__slots__`.
pub(crate) const FIELDS: [&str; 22] = [
    "_delivery",
    "_rt",
    "_sched",
    "attempt",
    "cached",
    "created_at",
    "error",
    "finished_at",
    "id",
    "idempotency_key",
    "max_retries",
    "payload",
    "priority",
    "queued_at",
    "result",
    "run_at",
    "started_at",
    "status",
    "tenant",
    "timeout",
    "trace",
    "type",
];
const DELIVERY: usize = 0;
pub(crate) const RT: usize = 1;
const SCHED: usize = 2;
pub(crate) const ATTEMPT: usize = 3;
pub(crate) const CACHED: usize = 4;
pub(crate) const CREATED_AT: usize = 5;
pub(crate) const ERROR: usize = 6;
pub(crate) const FINISHED_AT: usize = 7;
pub(crate) const ID: usize = 8;
pub(crate) const IDEMPOTENCY_KEY: usize = 9;
pub(crate) const MAX_RETRIES: usize = 10;
pub(crate) const PAYLOAD: usize = 11;
pub(crate) const PRIORITY: usize = 12;
pub(crate) const QUEUED_AT: usize = 13;
pub(crate) const RESULT: usize = 14;
pub(crate) const RUN_AT: usize = 15;
pub(crate) const STARTED_AT: usize = 16;
pub(crate) const STATUS: usize = 17;
pub(crate) const TENANT: usize = 18;
pub(crate) const TIMEOUT: usize = 19;
pub(crate) const TRACE: usize = 20;
pub(crate) const TYPE: usize = 21;

/// Where each field lives in an instance of the task class: the offsets of its `__slots__`
/// member descriptors (object slots that raise AttributeError while unset).
pub(crate) struct Layout {
    class: Py<PyType>,
    offsets: [ffi::Py_ssize_t; FIELDS.len()],
}

impl Layout {
    pub(crate) fn of(class: &Bound<'_, PyType>) -> PyResult<Self> {
        let mut offsets = [0; FIELDS.len()];
        let header = std::mem::size_of::<ffi::PyObject>() as ffi::Py_ssize_t;
        let basic = class
            .getattr("__basicsize__")?
            .extract::<ffi::Py_ssize_t>()?;
        for (offset, name) in offsets.iter_mut().zip(FIELDS) {
            let descr = class.getattr(name).map_err(|_| {
                PyTypeError::new_err(format!(
                    "TypeLedger(task_class): {name:?} is not a __slots__ field"
                ))
            })?;
            // SAFETY: reading the type of a live object; comparing with the address of the
            // interpreter's member-descriptor type (never written).
            let is_member = unsafe {
                ffi::Py_TYPE(descr.as_ptr()) == std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type)
            };
            if !is_member {
                return Err(PyTypeError::new_err(format!(
                    "TypeLedger(task_class): {name:?} is not a __slots__ field"
                )));
            }
            // SAFETY: `descr` is a member descriptor (checked above), whose `d_member` points to
            // the PyMemberDef its class owns for as long as the class lives (we hold the class).
            let (code, flags, at) = unsafe {
                let member = (*descr.as_ptr().cast::<ffi::PyMemberDescrObject>())
                    .d_member
                    .cast::<ffi::PyMemberDef>();
                ((*member).type_code, (*member).flags, (*member).offset)
            };
            let writable = flags & (ffi::Py_READONLY | ffi::Py_RELATIVE_OFFSET) == 0;
            let width = std::mem::size_of::<*mut ffi::PyObject>() as ffi::Py_ssize_t;
            let inside = at >= header && at + width <= basic && at % width == 0;
            if code != ffi::Py_T_OBJECT_EX || !writable || !inside {
                return Err(PyTypeError::new_err(format!(
                    "TypeLedger(task_class): {name:?} is not a writable object slot"
                )));
            }
            *offset = at;
        }
        Ok(Self {
            class: class.clone().unbind(),
            offsets,
        })
    }

    /// `task` as a record of this layout, or TypeError.
    #[inline]
    pub(crate) fn record<'a, 'py>(
        &'a self,
        task: &'a Bound<'py, PyAny>,
    ) -> PyResult<Record<'a, 'py>> {
        // SAFETY: both pointers are live objects; PyObject_TypeCheck only reads their types.
        let ok = unsafe {
            ffi::PyObject_TypeCheck(
                task.as_ptr(),
                self.class.as_ptr().cast::<ffi::PyTypeObject>(),
            )
        } != 0;
        if ok {
            Ok(Record {
                task,
                offsets: &self.offsets,
            })
        } else {
            Err(PyTypeError::new_err(format!(
                "TypeLedger: expected a task record, got {}",
                task.get_type().name()?
            )))
        }
    }

    /// A new, empty instance of the class (every field unset).
    fn allocate<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let class = self.class.as_ptr().cast::<ffi::PyTypeObject>();
        // SAFETY: `class` is a live type object; tp_alloc (PyType_GenericAlloc for a class made
        // by a class statement) returns a new reference with every slot NULL, or NULL with an
        // exception set.
        unsafe {
            let alloc = (*class).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            Bound::from_owned_ptr_or_err(py, alloc(class, 0))
        }
    }

    /// A new instance with every field set: those of `fresh`, the others empty.
    pub(crate) fn new_record<'py>(
        &self,
        py: Python<'py>,
        fresh: &Fresh<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let task = self.allocate(py)?;
        let record = self.record(&task)?;
        let none = py.None().into_bound(py);
        record.set(DELIVERY, &none);
        record.set(RT, fresh.runtime);
        record.set(SCHED, &none);
        record.set(ATTEMPT, &0i64.into_pyobject(py)?.into_any());
        record.set(CACHED, &false.into_pyobject(py)?.to_owned().into_any());
        record.set(CREATED_AT, fresh.created_at);
        record.set(ERROR, &none);
        record.set(FINISHED_AT, &none);
        record.set(ID, fresh.id);
        record.set(IDEMPOTENCY_KEY, fresh.idempotency_key);
        record.set(MAX_RETRIES, fresh.max_retries);
        record.set(PAYLOAD, fresh.payload);
        record.set(PRIORITY, fresh.priority);
        record.set(QUEUED_AT, fresh.queued_at);
        record.set(RESULT, &none);
        record.set(RUN_AT, &none);
        record.set(STARTED_AT, &none);
        record.set(STATUS, fresh.status);
        record.set(TENANT, fresh.tenant);
        record.set(TIMEOUT, fresh.timeout);
        record.set(TRACE, fresh.trace);
        record.set(TYPE, fresh.type_name);
        Ok(task)
    }
}

/// What a new task record is made of; its other fields start empty (None, `attempt` 0,
/// `cached` False). `accept` makes queued records, `TaskMaker` ones not yet submitted.
pub(crate) struct Fresh<'a, 'py> {
    pub(crate) runtime: &'a Bound<'py, PyAny>,
    pub(crate) status: &'a Bound<'py, PyAny>,
    pub(crate) queued_at: &'a Bound<'py, PyAny>,
    pub(crate) created_at: &'a Bound<'py, PyAny>,
    pub(crate) id: &'a Bound<'py, PyAny>,
    pub(crate) type_name: &'a Bound<'py, PyAny>,
    pub(crate) payload: &'a Bound<'py, PyAny>,
    pub(crate) tenant: &'a Bound<'py, PyAny>,
    pub(crate) idempotency_key: &'a Bound<'py, PyAny>,
    pub(crate) max_retries: &'a Bound<'py, PyAny>,
    pub(crate) timeout: &'a Bound<'py, PyAny>,
    pub(crate) priority: &'a Bound<'py, PyAny>,
    pub(crate) trace: &'a Bound<'py, PyAny>,
}

/// A task known to be an instance of the layout's class.
pub(crate) struct Record<'a, 'py> {
    task: &'a Bound<'py, PyAny>,
    offsets: &'a [ffi::Py_ssize_t; FIELDS.len()],
}

impl<'py> Record<'_, 'py> {
    #[inline]
    fn slot(&self, field: usize) -> *mut *mut ffi::PyObject {
        // SAFETY: the offset was checked to lie inside the instance layout of the class, and
        // the task is an instance of it (or of a subclass, which keeps the same layout).
        unsafe {
            self.task
                .as_ptr()
                .cast::<u8>()
                .offset(self.offsets[field])
                .cast::<*mut ffi::PyObject>()
        }
    }

    /// Sets a field (what `PyMember_SetOne` does for an object slot).
    #[inline]
    fn set(&self, field: usize, value: &Bound<'py, PyAny>) {
        let slot = self.slot(field);
        // SAFETY: `slot` points to an object slot of a live instance (see `slot`); we store a
        // new strong reference and release the old one after the store, as CPython does.
        unsafe {
            let old = *slot;
            *slot = value.clone().into_ptr();
            if !old.is_null() {
                ffi::Py_DECREF(old);
            }
        }
    }

    /// A field's value, or AttributeError when it is unset.
    #[inline]
    pub(crate) fn get(&self, field: usize) -> PyResult<Bound<'py, PyAny>> {
        let slot = self.slot(field);
        // SAFETY: as in `set`; a non-NULL slot holds a strong reference owned by the task,
        // which we borrow and turn into a new one.
        let value = unsafe { *slot };
        if value.is_null() {
            return Err(pyo3::exceptions::PyAttributeError::new_err(FIELDS[field]));
        }
        // SAFETY: `value` is a live object (non-NULL slot of a live task).
        Ok(unsafe { Bound::from_borrowed_ptr(self.task.py(), value) })
    }

    #[inline]
    fn get_f64(&self, field: usize) -> PyResult<f64> {
        let value = self.get(field)?;
        // SAFETY: `value` is a live object; an exact float's value is read in place.
        if unsafe { ffi::PyFloat_CheckExact(value.as_ptr()) } != 0 {
            return Ok(unsafe { ffi::PyFloat_AS_DOUBLE(value.as_ptr()) });
        }
        value.extract::<f64>()
    }
}

// --- ids ---------------------------------------------------------------------------------------

/// Task ids for native code: makes the ids of an `IdGenerator`'s current block.
///
/// The generator stays the one source of ids: its `block(wall)` starts each block (time stamp,
/// random bits, counter) and returns the 34 characters its 256 ids share; the ids themselves
/// (that head and two hex digits) are made here, without a Python call per id.
#[pyclass(frozen, module = "hulk._native", name = "IdStream")]
pub struct PyIdStream {
    generator: Py<PyAny>,
    block: Mutex<Block>,
}

/// Ids per block: the two last hex digits.
const BLOCK_IDS: u16 = 256;

struct Block {
    head: Vec<u8>,
    next: u16,
    expires: f64,
}

/// The id `head` + `index` as two lowercase hex digits.
fn block_id(head: &[u8], index: u16, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    out.extend_from_slice(head);
    out.push(HEX[usize::from(index >> 4) & 15]);
    out.push(HEX[usize::from(index) & 15]);
}

impl PyIdStream {
    fn take<'py>(&self, py: Python<'py>, wall: f64) -> PyResult<Bound<'py, PyAny>> {
        let mut text = Vec::with_capacity(40);
        {
            let mut block = self.block.lock();
            if wall < block.expires && block.next < BLOCK_IDS {
                block_id(&block.head, block.next, &mut text);
                block.next += 1;
            }
        }
        if text.is_empty() {
            // A new block: the generator's own rules (time stamp, counter, expiry).
            let made = self
                .generator
                .bind(py)
                .call_method1(pyo3::intern!(py, "block"), (wall,))?;
            let (head, expires): (String, f64) = made.extract()?;
            if !head.is_ascii() {
                return Err(PyValueError::new_err(
                    "IdStream: the generator's block head is not ASCII",
                ));
            }
            block_id(head.as_bytes(), 0, &mut text);
            *self.block.lock() = Block {
                head: head.into_bytes(),
                next: 1,
                expires,
            };
        }
        // ASCII by construction (an ASCII head and hex digits): copied into a new compact
        // ASCII string, with no UTF-8 decoding.
        if !text.is_ascii() {
            return Err(PyValueError::new_err("IdStream: the id is not ASCII"));
        }
        let len = text.len() as ffi::Py_ssize_t;
        // SAFETY: PyUnicode_New(len, 127) returns a new compact ASCII string of `len` one-byte
        // characters (or NULL with an exception set); its data holds `len` bytes, which we fill
        // with ASCII bytes before anyone else sees the string.
        unsafe {
            let made = ffi::PyUnicode_New(len, 127);
            if made.is_null() {
                return Err(PyErr::fetch(py));
            }
            std::ptr::copy_nonoverlapping(
                text.as_ptr(),
                ffi::PyUnicode_DATA(made).cast::<u8>(),
                text.len(),
            );
            Ok(Bound::from_owned_ptr(py, made))
        }
    }
}

#[pymethods]
impl PyIdStream {
    #[new]
    #[pyo3(signature = (generator))]
    fn new(generator: Py<PyAny>) -> Self {
        Self {
            generator,
            block: Mutex::new(Block {
                head: Vec::new(),
                next: BLOCK_IDS,
                expires: f64::NEG_INFINITY,
            }),
        }
    }

    /// One new id at Unix time `wall` (seconds).
    fn next_id<'py>(&self, py: Python<'py>, wall: f64) -> PyResult<Bound<'py, PyAny>> {
        self.take(py, check_time("next_id(wall)", wall)?)
    }
}

// --- the ledger --------------------------------------------------------------------------------

/// What `begin` returns.
pub(crate) const STARTED: i8 = 1;
const STARTED_TRACED: i8 = 2;
const REFUSED: i8 = 0;
pub(crate) const NOT_QUEUED: i8 = -1;
pub(crate) const NOT_CLOSED: i8 = -2;

/// One task type's hot-path bookkeeping: the task record, queue, events, counters, histograms
/// and breaker, fused.
#[pyclass(frozen, module = "hulk._native", name = "TypeLedger")]
pub struct PyTypeLedger {
    queue: Py<PyBoundedQueue>,
    submitted: Py<PyCounter>,
    started: Py<PyCounter>,
    succeeded: Py<PyCounter>,
    latency: Py<PyHistogram>,
    duration: Py<PyHistogram>,
    breaker: Option<Py<PyCircuitBreaker>>,
    layout: Layout,
    runtime: Py<PyAny>,
    type_name: Py<PyAny>,
    retries: Py<PyAny>,
    timeout: Py<PyAny>,
    queued: Py<PyAny>,
    running: Py<PyAny>,
    succeeded_status: Py<PyAny>,
    pending: Py<PyEventBuffer>,
    fresh: Py<PyList>,
    live: Py<PyDict>,
    ids: Py<PyIdStream>,
}

/// What the tasks accepted in one call share.
struct Shared<'a, 'py> {
    py: Python<'py>,
    wall: f64,
    at: Bound<'py, PyAny>,
    none: Bound<'py, PyAny>,
    tenant: &'a Bound<'py, PyAny>,
    retries: Bound<'py, PyAny>,
    timeout: Bound<'py, PyAny>,
    priority: &'a Bound<'py, PyAny>,
    trace: &'a Bound<'py, PyAny>,
}

impl<'a, 'py> Shared<'a, 'py> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ledger: &PyTypeLedger,
        py: Python<'py>,
        wall: f64,
        tenant: &'a Bound<'py, PyAny>,
        retries: &Bound<'py, PyAny>,
        timeout: &Bound<'py, PyAny>,
        priority: &'a Bound<'py, PyAny>,
        trace: &'a Bound<'py, PyAny>,
    ) -> PyResult<Self> {
        Ok(Self {
            py,
            wall,
            at: PyFloat::new(py, wall).into_any(),
            none: py.None().into_bound(py),
            tenant,
            retries: if retries.is_none() {
                ledger.retries.bind(py).clone()
            } else {
                retries.clone()
            },
            timeout: if timeout.is_none() {
                ledger.timeout.bind(py).clone()
            } else {
                timeout.clone()
            },
            priority,
            trace,
        })
    }
}

impl PyTypeLedger {
    #[inline]
    fn breaker(&self) -> Option<&Mutex<Breaker>> {
        self.breaker.as_ref().map(|b| &b.get().inner)
    }

    /// Makes one task record, queues, counts, indexes it and buffers its event.
    fn accept_one<'py>(
        &self,
        shared: &Shared<'_, 'py>,
        payload: &Bound<'py, PyAny>,
        idempotency_key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = shared.py;
        let (none, at) = (&shared.none, &shared.at);
        let id = self.ids.get().take(py, shared.wall)?;
        let task = self.layout.new_record(
            py,
            &Fresh {
                runtime: self.runtime.bind(py),
                status: self.queued.bind(py),
                queued_at: at,
                created_at: at,
                id: &id,
                type_name: self.type_name.bind(py),
                payload,
                tenant: shared.tenant,
                idempotency_key,
                max_retries: &shared.retries,
                timeout: &shared.timeout,
                priority: shared.priority,
                trace: shared.trace,
            },
        )?;
        if !self.queue.get().push_one(py, task.clone().unbind())? {
            return Ok(None);
        }
        self.submitted.get().inner.add(1);
        self.pending
            .get()
            .push(&task, none, self.queued.bind(py), at);
        // Filed in the live index by id only when someone looks (see the pool's `_index`).
        self.fresh.bind(py).append(&task)?;
        Ok(Some(task))
    }
}

#[pymethods]
impl PyTypeLedger {
    #[new]
    #[pyo3(signature = (
        *, queue, submitted, started, succeeded, latency, duration, task_class, runtime,
        type_name, retries, timeout, statuses, pending, fresh, live, ids, breaker=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        queue: Py<PyBoundedQueue>,
        submitted: Py<PyCounter>,
        started: Py<PyCounter>,
        succeeded: Py<PyCounter>,
        latency: Py<PyHistogram>,
        duration: Py<PyHistogram>,
        task_class: &Bound<'_, PyType>,
        runtime: Py<PyAny>,
        type_name: Py<PyAny>,
        retries: Py<PyAny>,
        timeout: Py<PyAny>,
        statuses: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
        pending: Py<PyEventBuffer>,
        fresh: Py<PyList>,
        live: Py<PyDict>,
        ids: Py<PyIdStream>,
        breaker: Option<Py<PyCircuitBreaker>>,
    ) -> PyResult<Self> {
        let (queued, running, succeeded_status) = statuses;
        Ok(Self {
            queue,
            submitted,
            started,
            succeeded,
            latency,
            duration,
            breaker,
            layout: Layout::of(task_class)?,
            runtime,
            type_name,
            retries,
            timeout,
            queued,
            running,
            succeeded_status,
            pending,
            fresh,
            live,
            ids,
        })
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

    /// Creates a queued task of this type and queues it; None (nothing kept) when the queue is full.
    ///
    /// `wall` is the Unix time of creation (None: read the system clock here).
    #[pyo3(signature = (payload, wall, tenant, idempotency_key, retries, timeout, priority, trace))]
    #[allow(clippy::too_many_arguments)]
    fn accept<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        wall: Option<f64>,
        tenant: &Bound<'py, PyAny>,
        idempotency_key: &Bound<'py, PyAny>,
        retries: &Bound<'py, PyAny>,
        timeout: &Bound<'py, PyAny>,
        priority: &Bound<'py, PyAny>,
        trace: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let wall = check_time("accept(wall)", wall.unwrap_or_else(crate::clock::realtime))?;
        let shared = Shared::new(self, py, wall, tenant, retries, timeout, priority, trace)?;
        self.accept_one(&shared, payload, idempotency_key)
    }

    /// `accept` for each payload in turn (one creation time), until the queue is full.
    ///
    /// Returns the accepted tasks: a prefix of `payloads`.
    #[pyo3(signature = (payloads, wall, tenant, retries, timeout, priority, trace))]
    #[allow(clippy::too_many_arguments)]
    fn accept_many<'py>(
        &self,
        py: Python<'py>,
        payloads: &Bound<'py, PyAny>,
        wall: f64,
        tenant: &Bound<'py, PyAny>,
        retries: &Bound<'py, PyAny>,
        timeout: &Bound<'py, PyAny>,
        priority: &Bound<'py, PyAny>,
        trace: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let wall = check_time("accept_many(wall)", wall)?;
        let shared = Shared::new(self, py, wall, tenant, retries, timeout, priority, trace)?;
        let none = py.None().into_bound(py);
        let accepted = PyList::empty(py);
        for payload in payloads.try_iter()? {
            match self.accept_one(&shared, &payload?, &none)? {
                Some(task) => accepted.append(task)?,
                None => break,
            }
        }
        Ok(accepted)
    }

    /// Starts an attempt of `task` at monotonic `now`; `offset` turns it into Unix time.
    ///
    /// Returns 1 (started), 2 (started; the task carries a trace context), 0 (the breaker
    /// refused: nothing changed but its refusal count) or -1 (the task is no longer queued:
    /// nothing changed).
    fn begin(&self, task: &Bound<'_, PyAny>, now: f64, offset: f64) -> PyResult<i8> {
        self.start(task, now, offset, false)
    }

    /// Ends `task`'s running attempt as a success with `result`, at monotonic `now`.
    ///
    /// Returns True when the task has a delivery to settle.
    pub(crate) fn succeed(
        &self,
        task: &Bound<'_, PyAny>,
        result: &Bound<'_, PyAny>,
        now: f64,
        offset: f64,
    ) -> PyResult<bool> {
        let py = task.py();
        let now = check_time("succeed(now)", now)?;
        let finished = check_time("succeed(offset)", now + offset)?;
        let record = self.layout.record(task)?;
        let duration = finished - record.get_f64(STARTED_AT)?;
        let cached = record.get(CACHED)?.is_truthy()?;
        let at = PyFloat::new(py, finished).into_any();
        record.set(RESULT, result);
        record.set(FINISHED_AT, &at);
        record.set(STATUS, self.succeeded_status.bind(py));
        self.pending.get().push(
            task,
            self.running.bind(py),
            self.succeeded_status.bind(py),
            &at,
        );
        succeed(
            self.breaker(),
            &self.succeeded.get().inner,
            &self.duration.get().inner,
            if duration.is_nan() { 0.0 } else { duration },
            now,
            cached,
        );
        // Out of the live index if it was filed there (it may not be, or be out already: a
        // task handed back by a drain).
        let live = self.live.bind(py);
        if !live.is_empty() {
            if let Err(err) = live.del_item(record.get(ID)?) {
                if !err.is_instance_of::<pyo3::exceptions::PyKeyError>(py) {
                    return Err(err);
                }
            }
        }
        Ok(!record.get(DELIVERY)?.is_none())
    }
}

impl PyTypeLedger {
    /// `begin`'s work. With `closed_only` (the native runner), a task whose breaker is not
    /// closed is left as it was and `NOT_CLOSED` returned.
    pub(crate) fn start(
        &self,
        task: &Bound<'_, PyAny>,
        now: f64,
        offset: f64,
        closed_only: bool,
    ) -> PyResult<i8> {
        let py = task.py();
        let now = check_time("begin(now)", now)?;
        let started = check_time("begin(offset)", now + offset)?;
        let record = self.layout.record(task)?;
        if !record.get(STATUS)?.is(self.queued.bind(py)) {
            return Ok(NOT_QUEUED);
        }
        let waited = started - record.get_f64(QUEUED_AT)?;
        let attempt = record.get(ATTEMPT)?.extract::<i64>()?;
        match begin(
            self.breaker(),
            &self.started.get().inner,
            &self.latency.get().inner,
            now,
            if waited.is_nan() { 0.0 } else { waited },
            closed_only,
        ) {
            Admission::Started => {}
            Admission::Refused => return Ok(REFUSED),
            Admission::NotClosed => return Ok(NOT_CLOSED),
        }
        let at = PyFloat::new(py, started).into_any();
        record.set(STATUS, self.running.bind(py));
        record.set(
            ATTEMPT,
            &attempt.saturating_add(1).into_pyobject(py)?.into_any(),
        );
        record.set(STARTED_AT, &at);
        self.pending
            .get()
            .push(task, self.queued.bind(py), self.running.bind(py), &at);
        Ok(if record.get(TRACE)?.is_none() {
            STARTED
        } else {
            STARTED_TRACED
        })
    }
}

// --- new task records ---------------------------------------------------------------------------

/// Makes new task records (what `Task(...)` makes) with every field set in one call.
///
/// For the intake, which builds a task per fetched message (a hundred per batch message): the
/// class's `__init__` with ten keyword arguments costs more than the rest of the record's
/// bookkeeping.
#[pyclass(frozen, module = "hulk._native", name = "TaskMaker")]
pub struct PyTaskMaker {
    layout: Layout,
}

#[pymethods]
impl PyTaskMaker {
    #[new]
    fn new(task_class: &Bound<'_, PyType>) -> PyResult<Self> {
        Ok(Self {
            layout: Layout::of(task_class)?,
        })
    }

    /// A new task record, as `task_class(type, payload, id=..., ...)` makes it: not submitted
    /// (no status), attempt 0, no times but `created_at`, no outcome.
    #[pyo3(signature = (r#type, payload, id, tenant, idempotency_key, max_retries, timeout, priority, trace, created_at))]
    #[allow(clippy::too_many_arguments)]
    fn make<'py>(
        &self,
        py: Python<'py>,
        r#type: &Bound<'py, PyAny>,
        payload: &Bound<'py, PyAny>,
        id: &Bound<'py, PyAny>,
        tenant: &Bound<'py, PyAny>,
        idempotency_key: &Bound<'py, PyAny>,
        max_retries: &Bound<'py, PyAny>,
        timeout: &Bound<'py, PyAny>,
        priority: &Bound<'py, PyAny>,
        trace: &Bound<'py, PyAny>,
        created_at: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let none = py.None().into_bound(py);
        self.layout.new_record(
            py,
            &Fresh {
                runtime: &none,
                status: &none,
                queued_at: &none,
                created_at,
                id,
                type_name: r#type,
                payload,
                tenant,
                idempotency_key,
                max_retries,
                timeout,
                priority,
                trace,
            },
        )
    }
}

/// Adds `TypeLedger`, `IdStream` and `TaskMaker` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTypeLedger>()?;
    m.add_class::<PyIdStream>()?;
    m.add_class::<PyTaskMaker>()?;
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
    fn block_ids_are_the_head_and_two_hex_digits_in_order() {
        let mut out = Vec::new();
        block_id(b"head-", 0, &mut out);
        assert_eq!(out, b"head-00");
        block_id(b"head-", 0xab, &mut out);
        assert_eq!(out, b"head-ab");
        block_id(b"head-", BLOCK_IDS - 1, &mut out);
        assert_eq!(out, b"head-ff");
    }

    #[test]
    fn begin_counts_and_observes_when_allowed() {
        let (started, latency) = (AtomicCounter::default(), histogram());
        assert_eq!(
            begin(None, &started, &latency, 0.0, 0.5, false),
            Admission::Started
        );
        assert_eq!(
            begin(None, &started, &latency, 0.0, -1.0, true),
            Admission::Started
        );
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
        assert_eq!(
            begin(Some(&b), &started, &latency, 1.0, 0.0, false),
            Admission::Refused
        );
        assert_eq!(started.get(), 0);
        assert_eq!(latency.snapshot().3, 0);
        // After the wait it half-opens and lets a probe through.
        assert_eq!(
            begin(Some(&b), &started, &latency, 11.0, 0.0, false),
            Admission::Started
        );
        assert_eq!(started.get(), 1);
    }

    #[test]
    fn closed_only_leaves_a_breaker_that_is_not_closed_untouched() {
        let b = breaker();
        let (started, latency) = (AtomicCounter::default(), histogram());
        assert_eq!(
            begin(Some(&b), &started, &latency, 0.0, 0.0, true),
            Admission::Started
        );
        b.lock().force_open(Some(0.0));
        assert_eq!(
            begin(Some(&b), &started, &latency, 1.0, 0.0, true),
            Admission::NotClosed
        );
        // Neither a refusal nor a start was counted, and a due half-open was not taken.
        assert_eq!(b.lock().metrics(Some(1.0)).rejected, 0);
        assert_eq!(
            begin(Some(&b), &started, &latency, 11.0, 0.0, true),
            Admission::NotClosed
        );
        assert_eq!(started.get(), 1);
        assert_eq!(
            begin(Some(&b), &started, &latency, 11.0, 0.0, false),
            Admission::Started
        );
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
