//! The L1 cache: a bounded, concurrent, in-process cache with per-entry TTL and a frequency-aware
//! eviction policy, the first level of hulk's L1 → L2 (Redis) → L3 (RocksDB) cache.
//!
//! # Policy and crate
//! The store is `quick_cache`'s cache: a hash table plus a CLOCK-PRO / S3-FIFO style policy (a
//! small "cold" ring for new entries, a "hot" ring for entries read again, and "ghost" hashes of
//! recently evicted keys, so a key that comes back is admitted as hot). Like TinyLFU it keeps
//! one-hit wonders from pushing the frequently read working set out. It was chosen over `moka`
//! (W-TinyLFU) by measurement (figures and commands in `bench/results/cache.md`):
//! - hit ratio, capacity 5,000 on Zipf traces of 1,000,000 keys: quick_cache beats both LRU and
//!   LFU and is within 7 points of Belady's optimum at α = 0.9 and 4 at α = 1.1; moka fell below
//!   LFU at α = 0.9 on the same trace;
//! - speed: a quick_cache read is a shard read-lock, one probe and a reference-bit update, about
//!   10× cheaper than a moka read, which also queues the access for a maintenance pass;
//! - bound: quick_cache evicts inside the insert, so `len()` never exceeds the capacity once a call
//!   returns; moka evicts in deferred maintenance and can run over capacity meanwhile.
//!
//! Shards split the capacity exactly (`shard_count`); defaults for the hot and ghost
//! allocations were kept: other settings measured within noise or worse.
//!
//! # Keys, values and lookups
//! Keys are `str` or `bytes` (a `str` and the `bytes` of its UTF-8 are different keys). A lookup
//! allocates nothing: it borrows the key's bytes (the UTF-8 that CPython keeps on the `str`, which
//! for ASCII is the string's own buffer, or the `bytes` buffer) and takes the hash CPython already
//! cached on the object, then probes with [`KeyRef`] through `quick_cache`'s `Equivalent`. Reusing
//! Python's hash instead of hashing the bytes again took a hit from about 95 ns to about 72 ns.
//! Only an insert allocates an owned [`Key`]. The store clones a value on read: the Python value's
//! clone is a plain reference-count increment (every call is attached to the interpreter), cheaper
//! than an `Arc` around it (two atomic operations per read).
//!
//! # Expiry
//! Each entry stores its expiry instant (`+inf` when it has no TTL). A read of an expired entry is
//! a miss and drops the entry then (lazy expiry); nothing sweeps in the background, so an expired
//! entry keeps its slot until it is read, deleted or evicted, and `len()` counts it. The clock is
//! read only for entries that have a TTL, at most once per call.
//!
//! # Locks and the GIL
//! Every call holds the GIL and the shard locks are held only for a probe or an insert, never
//! while Python code runs: values evicted or replaced by an insert are handed out by the
//! [`Lifecycle`] hook and released after the lock, so a value's `__del__` that uses the cache
//! cannot deadlock. Counters are relaxed atomics.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyMapping, PyString, PyTuple};
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Lifecycle, OptionsBuilder, UnitWeighter};

use crate::clock;
use crate::counters::AtomicCounter;

/// Upper bound on the number of shards. Calls hold the GIL, so shards buy little parallelism
/// today; large caches still get a few, which measured no hit-ratio loss (each shard runs the
/// policy on its slice of the keys) and is ready for threads that run without the GIL.
const MAX_SHARDS: usize = 8;

/// Smallest number of entries per shard worth splitting for.
const MIN_SHARD_ENTRIES: usize = 4096;

/// Which Python type a key came from: `str` and `bytes` with equal bytes are different keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A `str`, stored as its UTF-8.
    Str = 0,
    /// A `bytes`.
    Bytes = 1,
}

/// An owned cache key: the kind, the bytes and the key's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    hash: u64,
    kind: KeyKind,
    bytes: Box<[u8]>,
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A borrowed cache key, used to probe without allocating.
///
/// It carries its hash, computed once by whoever made the key: the Python binding reuses the hash
/// CPython caches on every `str` and `bytes` object, so a lookup never rehashes the bytes. All the
/// keys of one cache must take their hash from the same source ([`KeyRef::new`] in Rust code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef<'a> {
    hash: u64,
    kind: KeyKind,
    bytes: &'a [u8],
}

impl<'a> KeyRef<'a> {
    /// A key hashed by Rust: SipHash-1-3 with fixed keys over the kind and the bytes.
    pub fn new(kind: KeyKind, bytes: &'a [u8]) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        h.write_u8(kind as u8);
        h.write(bytes);
        Self::with_hash(kind, bytes, h.finish())
    }

    /// A key whose hash the caller computed; equal keys must come with equal hashes.
    #[inline]
    pub fn with_hash(kind: KeyKind, bytes: &'a [u8], hash: u64) -> Self {
        Self { hash, kind, bytes }
    }

    /// Copies the key into an owned [`Key`].
    pub fn to_key(self) -> Key {
        Key {
            hash: self.hash,
            kind: self.kind,
            bytes: self.bytes.into(),
        }
    }
}

impl Hash for KeyRef<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    #[inline]
    fn equivalent(&self, key: &Key) -> bool {
        self.hash == key.hash && self.kind == key.kind && *self.bytes == *key.bytes
    }
}

/// Hands the store the hash a key already carries, instead of hashing again.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHashBuilder;

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;

    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// The hasher of [`KeyHashBuilder`]: it keeps the one `u64` a key writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Only keys are hashed here and they write one `u64`; this is a plain FNV-1a fallback.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A stored value with its expiry instant (monotonic seconds; `+inf` for no TTL).
#[derive(Debug, Clone)]
pub struct Entry<V> {
    /// The cached value.
    pub value: V,
    expires_at: f64,
    /// Sequence number of the insert that stored it: tells a value from a later one.
    id: u64,
}

impl<V> Entry<V> {
    /// Whether the entry is live at the instant `now` yields; the clock is read only when the
    /// entry has a TTL.
    #[inline]
    fn is_live(&self, now: &mut Now) -> bool {
        self.expires_at == f64::INFINITY || now.get() < self.expires_at
    }
}

/// The current instant for one call: the caller's `now`, else the native clock read at most
/// once, and only if an entry with a TTL asks for it.
#[derive(Debug, Clone, Copy)]
pub struct Now(Option<f64>);

impl Now {
    /// Uses `now` when given, else reads the clock lazily.
    #[inline]
    pub fn new(now: Option<f64>) -> Self {
        Self(now)
    }

    /// The instant, reading the clock on first use when none was given.
    #[inline]
    pub fn get(&mut self) -> f64 {
        *self.0.get_or_insert_with(clock::monotonic)
    }
}

/// Collects the values an insert evicts or replaces, so they are dropped after the shard lock is
/// released (dropping a Python value can run arbitrary code).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spill;

/// What one insert pushed out: evicted entries and the replaced value of the same key.
pub type Spilled<V> = Vec<(Key, Entry<V>)>;

impl<V> Lifecycle<Key, Entry<V>> for Spill {
    type RequestState = Spilled<V>;

    #[inline]
    fn begin_request(&self) -> Self::RequestState {
        Vec::new()
    }

    #[inline]
    fn on_evict(&self, state: &mut Self::RequestState, key: Key, val: Entry<V>) {
        state.push((key, val));
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing or an expired entry.
    pub misses: u64,
    /// Values stored.
    pub inserts: u64,
    /// Entries dropped by the policy to make room, or dropped when read after expiry.
    pub evictions: u64,
    /// Entries held now, expired ones not yet dropped included.
    pub size: usize,
    /// Maximum number of entries.
    pub capacity: usize,
}

impl Stats {
    /// `hits / (hits + misses)`, 0.0 before any read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

type Store<V> = Cache<Key, Entry<V>, UnitWeighter, KeyHashBuilder, Spill>;

/// Picks a power-of-two shard count that divides `capacity` exactly (so the shards' capacities
/// add up to `capacity`, never more) and leaves each shard at least [`MIN_SHARD_ENTRIES`].
fn shard_count(capacity: usize) -> usize {
    let mut shards = MAX_SHARDS.next_power_of_two();
    while shards > 1 && (!capacity.is_multiple_of(shards) || capacity / shards < MIN_SHARD_ENTRIES)
    {
        shards /= 2;
    }
    shards
}

/// The cache itself, generic over the value so it is tested without Python.
pub struct L1<V> {
    store: Store<V>,
    capacity: usize,
    hits: AtomicCounter,
    misses: AtomicCounter,
    /// Also the sequence number of the next insert.
    inserts: AtomicU64,
    evictions: AtomicCounter,
}

impl<V: Clone> std::fmt::Debug for L1<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1")
            .field("capacity", &self.capacity)
            .field("len", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl<V: Clone> L1<V> {
    /// Creates a cache holding at most `capacity` entries (`capacity` >= 1).
    pub fn new(capacity: usize) -> Result<Self, String> {
        if capacity == 0 {
            return Err("capacity must be >= 1, got 0".into());
        }
        let options = OptionsBuilder::new()
            .shards(shard_count(capacity))
            .estimated_items_capacity(capacity)
            .weight_capacity(capacity as u64)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            store: Cache::with_options(options, UnitWeighter, KeyHashBuilder, Spill),
            capacity,
            hits: AtomicCounter::default(),
            misses: AtomicCounter::default(),
            inserts: AtomicU64::new(0),
            evictions: AtomicCounter::default(),
        })
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of entries held, expired ones not yet dropped included; never above the capacity.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The live entry under `key`, counting a hit or a miss; an expired entry is dropped.
    #[inline]
    pub fn get(&self, key: KeyRef<'_>, now: &mut Now) -> Option<Entry<V>> {
        match self.store.get(&key) {
            Some(entry) if entry.is_live(now) => {
                self.hits.add(1);
                Some(entry)
            }
            Some(expired) => {
                self.misses.add(1);
                self.drop_expired(key, &expired);
                None
            }
            None => {
                self.misses.add(1);
                None
            }
        }
    }

    /// Whether `key` holds a live entry, without counting a read or touching the policy.
    pub fn contains(&self, key: KeyRef<'_>, now: &mut Now) -> bool {
        self.store.peek(&key).is_some_and(|e| e.is_live(now))
    }

    /// Drops `expired` unless a new value replaced it meanwhile.
    #[cold]
    fn drop_expired(&self, key: KeyRef<'_>, expired: &Entry<V>) {
        let removed = self
            .store
            .remove_if(&key, |current| current.id == expired.id);
        if removed.is_some() {
            self.evictions.add(1);
        }
    }

    /// Stores `value` under `key` until `expires_at` (`f64::INFINITY`: no expiry).
    pub fn insert(&self, key: KeyRef<'_>, value: V, expires_at: f64) {
        let id = self.inserts.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            value,
            expires_at,
            id,
        };
        let spilled: Spilled<V> = self.store.insert_with_lifecycle(key.to_key(), entry);
        // The hook also hands back the value this insert replaced: that one is no eviction.
        let evicted = spilled.iter().filter(|(k, _)| !key.equivalent(k)).count();
        if evicted > 0 {
            self.evictions.add(evicted as u64);
        }
        // `spilled` drops here, after the shard lock is released.
    }

    /// Removes `key`; true if it held an entry (even an expired one not yet dropped).
    pub fn remove(&self, key: KeyRef<'_>) -> bool {
        self.store.remove(&key).is_some()
    }

    /// Removes every entry. Entries inserted while it runs may survive it.
    pub fn clear(&self) {
        // `drain` takes each shard lock per entry and hands the entry out, so values are dropped
        // outside the lock (unlike `Cache::clear`).
        for entry in self.store.drain() {
            drop(entry);
        }
    }

    /// A copy of the counters, the size and the capacity.
    pub fn stats(&self) -> Stats {
        Stats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.get(),
            size: self.store.len(),
            capacity: self.capacity,
        }
    }
}

// --- Python binding ------------------------------------------------------------------------------

/// A cached Python value whose clone takes a new reference.
///
/// Only `PyL1Cache` holds these, and it clones them (inside the store's reads) only while its
/// methods run, which is always attached to the interpreter; that is what makes the unsynchronised
/// reference-count increment below sound. Dropping one goes through `Py`'s own `Drop`.
struct PyValue(Py<PyAny>);

impl Clone for PyValue {
    #[inline]
    fn clone(&self) -> Self {
        // SAFETY: see the type's doc: every clone happens inside a `PyL1Cache` method, on a thread
        // attached to the interpreter, and the token does not outlive this call.
        let py = unsafe { Python::assume_attached() };
        Self(self.0.clone_ref(py))
    }
}

/// Checks a TTL in seconds: a number >= 0; `inf` means no expiry.
fn check_ttl(what: &str, ttl: f64) -> PyResult<f64> {
    if ttl.is_nan() || ttl < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a number of seconds >= 0 (or inf: no expiry), got {ttl}"
        )));
    }
    Ok(ttl)
}

/// Checks a caller-provided `now`: a finite instant.
#[inline]
fn check_now(what: &str, now: Option<f64>) -> PyResult<Now> {
    match now {
        Some(t) if !t.is_finite() => Err(PyValueError::new_err(format!(
            "{what} must be a finite number of seconds, got {t}"
        ))),
        _ => Ok(Now::new(now)),
    }
}

/// Borrows a Python key as a [`KeyRef`]: `str` (its UTF-8) or `bytes`, else `TypeError`.
///
/// The hash is the one `str` / `bytes` define (and CPython caches on the object), taken from the
/// base type so a subclass that overrides `__hash__` (an `enum.StrEnum` member does) still finds
/// the entry of the equal plain `str`.
#[inline]
fn key_ref<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<KeyRef<'a>> {
    if let Ok(s) = key.cast::<PyString>() {
        let utf8 = s.to_str()?;
        // SAFETY: reads a field of CPython's static `str` type object.
        let tp_hash = unsafe { (*std::ptr::addr_of!(ffi::PyUnicode_Type)).tp_hash };
        return Ok(KeyRef::with_hash(
            KeyKind::Str,
            utf8.as_bytes(),
            base_hash(key, tp_hash)?,
        ));
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        // SAFETY: reads a field of CPython's static `bytes` type object.
        let tp_hash = unsafe { (*std::ptr::addr_of!(ffi::PyBytes_Type)).tp_hash };
        return Ok(KeyRef::with_hash(
            KeyKind::Bytes,
            b.as_bytes(),
            base_hash(key, tp_hash)?,
        ));
    }
    Err(bad_key(key))
}

/// Calls a base type's hash slot on `key` (an instance of that type or of a subclass).
#[inline]
fn base_hash(key: &Bound<'_, PyAny>, tp_hash: Option<ffi::hashfunc>) -> PyResult<u64> {
    let hash = match tp_hash {
        // SAFETY: `key` is a live instance of the type whose slot this is, and we are attached.
        Some(f) => unsafe { f(key.as_ptr()) },
        None => return key.hash().map(|h| h as u64),
    };
    if hash == -1 {
        return Err(PyErr::take(key.py())
            .unwrap_or_else(|| PyTypeError::new_err("L1Cache key could not be hashed")));
    }
    Ok(hash as u64)
}

#[cold]
fn bad_key(key: &Bound<'_, PyAny>) -> PyErr {
    let name = key
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    PyTypeError::new_err(format!("L1Cache key must be str or bytes, got {name}"))
}

/// Bounded concurrent cache with per-entry TTL and frequency-aware eviction.
///
/// Args:
///     capacity: maximum number of entries, >= 1.
///     ttl: default time to live in seconds for entries set without one (None: no expiry).
///
/// Raises:
///     ValueError: capacity < 1, or ttl negative or NaN.
#[pyclass(frozen, module = "hulk._native", name = "L1Cache")]
pub struct PyL1Cache {
    inner: L1<PyValue>,
    default_ttl: Option<f64>,
}

impl PyL1Cache {
    /// The expiry instant for a value set now with `ttl` (else the default TTL).
    #[inline]
    fn expires_at(&self, what: &str, ttl: Option<f64>, now: &mut Now) -> PyResult<f64> {
        match ttl.or(self.default_ttl) {
            None => Ok(f64::INFINITY),
            Some(t) => {
                let t = check_ttl(what, t)?;
                if t == f64::INFINITY {
                    Ok(f64::INFINITY)
                } else {
                    Ok(now.get() + t)
                }
            }
        }
    }
}

#[pymethods]
impl PyL1Cache {
    #[new]
    #[pyo3(signature = (capacity, *, ttl=None))]
    fn new(capacity: i64, ttl: Option<f64>) -> PyResult<Self> {
        if capacity < 1 {
            return Err(PyValueError::new_err(format!(
                "L1Cache(capacity) must be >= 1, got {capacity}"
            )));
        }
        if let Some(t) = ttl {
            check_ttl("L1Cache(ttl)", t)?;
        }
        let capacity = usize::try_from(capacity).map_err(|_| {
            PyValueError::new_err(format!("L1Cache(capacity) too large: {capacity}"))
        })?;
        let inner =
            L1::new(capacity).map_err(|e| PyValueError::new_err(format!("L1Cache: {e}")))?;
        Ok(Self {
            inner,
            default_ttl: ttl,
        })
    }

    /// Maximum number of entries.
    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// The value of a live entry, or `default`.
    ///
    /// An expired entry is a miss and is dropped. O(1); does not release the GIL.
    ///
    /// Raises:
    ///     TypeError: the key is not str or bytes.
    ///     ValueError: now is not finite.
    #[pyo3(signature = (key, default=None, now=None))]
    fn get<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<&Bound<'py, PyAny>>,
        now: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = key_ref(key)?;
        let mut now = check_now("L1Cache.get(now)", now)?;
        let py = key.py();
        match self.inner.get(k, &mut now) {
            Some(entry) => Ok(entry.value.0.into_bound(py)),
            None => Ok(match default {
                Some(d) => d.clone(),
                None => py.None().into_bound(py),
            }),
        }
    }

    /// Stores `value`; `ttl` overrides the cache's default.
    ///
    /// Raises:
    ///     TypeError: the key is not str or bytes.
    ///     ValueError: ttl negative or NaN, or now not finite.
    #[pyo3(signature = (key, value, ttl=None, now=None))]
    fn set(
        &self,
        key: &Bound<'_, PyAny>,
        value: Py<PyAny>,
        ttl: Option<f64>,
        now: Option<f64>,
    ) -> PyResult<()> {
        let k = key_ref(key)?;
        let mut now = check_now("L1Cache.set(now)", now)?;
        let expires_at = self.expires_at("L1Cache.set(ttl)", ttl, &mut now)?;
        self.inner.insert(k, PyValue(value), expires_at);
        Ok(())
    }

    /// Removes `key`; True if it was present.
    ///
    /// An expired entry not yet dropped counts as present.
    ///
    /// Raises:
    ///     TypeError: the key is not str or bytes.
    fn delete(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.remove(key_ref(key)?))
    }

    /// The live entries among `keys` (misses are left out).
    ///
    /// The clock is read at most once for the whole call.
    ///
    /// Raises:
    ///     TypeError: a key is not str or bytes, or keys is not iterable.
    ///     ValueError: now is not finite.
    #[pyo3(signature = (keys, now=None))]
    fn get_many<'py>(
        &self,
        keys: &Bound<'py, PyAny>,
        now: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut now = check_now("L1Cache.get_many(now)", now)?;
        let py = keys.py();
        let found = PyDict::new(py);
        for key in keys.try_iter()? {
            let key = key?;
            if let Some(entry) = self.inner.get(key_ref(&key)?, &mut now) {
                found.set_item(&key, entry.value.0.bind(py))?;
            }
        }
        Ok(found)
    }

    /// Stores every item with the same `ttl`.
    ///
    /// `items` is a mapping or an iterable of (key, value) pairs. Every key is checked before
    /// anything is stored, so a bad key stores nothing.
    ///
    /// Raises:
    ///     TypeError: a key is not str or bytes, or an item is not a (key, value) pair.
    ///     ValueError: ttl negative or NaN, or now not finite.
    #[pyo3(signature = (items, ttl=None, now=None))]
    fn set_many(
        &self,
        items: &Bound<'_, PyAny>,
        ttl: Option<f64>,
        now: Option<f64>,
    ) -> PyResult<()> {
        let mut now = check_now("L1Cache.set_many(now)", now)?;
        let expires_at = self.expires_at("L1Cache.set_many(ttl)", ttl, &mut now)?;
        let source = match items.cast::<PyMapping>() {
            Ok(mapping) => mapping.items()?.into_any(),
            Err(_) => items.clone(),
        };
        let mut pairs = Vec::new();
        for item in source.try_iter()? {
            let item = item?;
            let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2);
            let Some(pair) = pair else {
                let name = item
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(PyTypeError::new_err(format!(
                    "L1Cache.set_many(items) must hold (key, value) pairs, got {name}"
                )));
            };
            let key = pair.get_item(0)?;
            key_ref(&key)?;
            pairs.push((key, pair.get_item(1)?));
        }
        for (key, value) in pairs {
            self.inner
                .insert(key_ref(&key)?, PyValue(value.unbind()), expires_at);
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Whether `key` holds a live entry (by the native clock); not counted as a read.
    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.contains(key_ref(key)?, &mut Now::new(None)))
    }

    /// Removes every entry.
    fn clear(&self) {
        self.inner.clear();
    }

    /// Hits, misses, inserts, evictions, hit ratio, size and capacity.
    ///
    /// `evictions` counts entries dropped to make room and expired entries dropped when read.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("inserts", s.inserts)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("hit_ratio", s.hit_ratio())?;
        d.set_item("size", s.size)?;
        d.set_item("capacity", s.capacity)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "L1Cache(capacity={}, size={})",
            self.inner.capacity(),
            self.inner.len()
        )
    }
}

/// Adds `L1Cache` to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyL1Cache>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> KeyRef<'_> {
        KeyRef::new(KeyKind::Str, s.as_bytes())
    }

    fn b(s: &[u8]) -> KeyRef<'_> {
        KeyRef::new(KeyKind::Bytes, s)
    }

    fn at(t: f64) -> Now {
        Now::new(Some(t))
    }

    #[test]
    fn get_returns_the_last_value_set() {
        let c = L1::<u32>::new(10).unwrap();
        assert!(c.get(k("a"), &mut at(0.0)).is_none());
        c.insert(k("a"), 1, f64::INFINITY);
        c.insert(k("a"), 2, f64::INFINITY);
        assert_eq!(c.get(k("a"), &mut at(0.0)).unwrap().value, 2);
        assert_eq!(c.len(), 1);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.evictions), (1, 1, 2, 0));
        assert!((s.hit_ratio() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn str_and_bytes_are_different_keys() {
        let c = L1::<u32>::new(10).unwrap();
        c.insert(k("a"), 1, f64::INFINITY);
        c.insert(b(b"a"), 2, f64::INFINITY);
        assert_eq!(c.get(k("a"), &mut at(0.0)).unwrap().value, 1);
        assert_eq!(c.get(b(b"a"), &mut at(0.0)).unwrap().value, 2);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn borrowed_and_owned_keys_hash_alike() {
        let h = KeyHashBuilder;
        let owned = k("hello").to_key();
        assert_eq!(h.hash_one(&owned), h.hash_one(k("hello")));
        assert!(k("hello").equivalent(&owned));
        assert!(!b(b"hello").equivalent(&owned));
        assert!(!k("hellO").equivalent(&owned));
        // Same hash, different bytes: still different keys.
        let forged = KeyRef::with_hash(KeyKind::Str, b"other", k("hello").hash);
        assert!(!forged.equivalent(&owned));
    }

    #[test]
    fn colliding_hashes_keep_keys_apart() {
        let c = L1::<usize>::new(100).unwrap();
        let names: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
        fn same(s: &str) -> KeyRef<'_> {
            KeyRef::with_hash(KeyKind::Str, s.as_bytes(), 7)
        }
        for (i, n) in names.iter().enumerate() {
            c.insert(same(n), i, f64::INFINITY);
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(c.get(same(n), &mut at(0.0)).unwrap().value, i);
        }
        assert!(c.remove(same("key3")));
        assert!(c.get(same("key3"), &mut at(0.0)).is_none());
        assert_eq!(c.get(same("key4"), &mut at(0.0)).unwrap().value, 4);
    }

    #[test]
    fn expired_entries_are_misses_and_dropped() {
        let c = L1::<u32>::new(10).unwrap();
        c.insert(k("a"), 1, 10.0);
        assert!(c.contains(k("a"), &mut at(9.9)));
        assert_eq!(c.get(k("a"), &mut at(9.9)).unwrap().value, 1);
        assert!(!c.contains(k("a"), &mut at(10.0)));
        assert!(c.get(k("a"), &mut at(10.0)).is_none());
        assert_eq!(c.len(), 0);
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn entries_without_ttl_never_read_the_clock() {
        let c = L1::<u32>::new(10).unwrap();
        c.insert(k("a"), 1, f64::INFINITY);
        let mut now = Now::new(None);
        assert!(c.get(k("a"), &mut now).is_some());
        assert!(now.0.is_none());
        c.insert(k("b"), 1, 1e300);
        assert!(c.get(k("b"), &mut now).is_some());
        assert!(now.0.is_some());
    }

    #[test]
    fn size_never_exceeds_capacity() {
        for cap in [1usize, 2, 3, 7, 100, 4097, 8192, 10_000] {
            let c = L1::<usize>::new(cap).unwrap();
            for i in 0..cap * 5 {
                let key = format!("k{}", i % (cap * 3));
                c.insert(k(&key), i, f64::INFINITY);
                assert!(c.len() <= cap, "cap {cap}: len {}", c.len());
            }
            let s = c.stats();
            assert_eq!(s.inserts as usize, cap * 5);
            assert!(s.evictions > 0);
            assert!(s.size <= cap);
        }
    }

    #[test]
    fn capacity_zero_is_refused() {
        assert!(L1::<u8>::new(0).is_err());
    }

    #[test]
    fn shard_counts_divide_the_capacity() {
        for cap in [1usize, 5000, 4096, 8192, 65_536, 100_001] {
            let n = shard_count(cap);
            assert!(n.is_power_of_two());
            assert_eq!(cap % n, 0);
            assert!(n == 1 || cap / n >= MIN_SHARD_ENTRIES);
        }
    }

    #[test]
    fn remove_and_clear() {
        let c = L1::<u32>::new(100).unwrap();
        for i in 0..50 {
            c.insert(k(&i.to_string()), i, f64::INFINITY);
        }
        assert!(c.remove(k("7")));
        assert!(!c.remove(k("7")));
        assert!(c.get(k("7"), &mut at(0.0)).is_none());
        c.clear();
        assert!(c.is_empty());
        assert!(c.get(k("8"), &mut at(0.0)).is_none());
    }

    #[test]
    fn frequent_keys_survive_a_scan() {
        let c = L1::<u32>::new(100).unwrap();
        for _ in 0..3 {
            for i in 0..50 {
                let key = format!("hot{i}");
                if c.get(k(&key), &mut at(0.0)).is_none() {
                    c.insert(k(&key), i, f64::INFINITY);
                }
            }
        }
        for i in 0..10_000 {
            let key = format!("scan{i}");
            c.insert(k(&key), i, f64::INFINITY);
        }
        let kept = (0..50)
            .filter(|i| c.contains(k(&format!("hot{i}")), &mut at(0.0)))
            .count();
        assert!(kept >= 45, "only {kept} of 50 hot keys survived a scan");
    }

    #[test]
    fn threads_share_one_cache() {
        let c = std::sync::Arc::new(L1::<usize>::new(1000).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let n = (i * 7 + t) % 3000;
                        let key = n.to_string();
                        match c.get(k(&key), &mut at(0.0)) {
                            Some(e) => assert_eq!(e.value, n),
                            None => c.insert(k(&key), n, f64::INFINITY),
                        }
                        assert!(c.len() <= 1000);
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok());
        }
        let s = c.stats();
        assert_eq!(s.hits + s.misses, 80_000);
        assert!(s.size <= 1000);
    }
}
