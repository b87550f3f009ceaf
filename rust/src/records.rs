//! Task records as JSON, for the status store's hot path.
//!
//! Every task that ends writes its record to the status store (the JetStream KV bucket): in
//! Python that is `Task.to_dict()` (a 19-key dict), `orjson.dumps`, a key check and a subject,
//! about 1.3 µs a task, the largest single cost of a bulk worker. `RecordEncoder` reads the task's
//! `__slots__` directly (the ledger's checked layout) and writes the same JSON in one pass: the
//! same keys in the same order, `null` for NaN and infinities as orjson writes them. Values it
//! does not write itself (a payload or result that is not a plain dict, list, tuple, str, int,
//! float, bool or None, or nested deeper than 64 levels) go through the fallback it was given
//! (`orjson.dumps`), which also raises orjson's own error for what JSON cannot hold.
//!
//! The JSON writing itself is plain Rust (`write_str`, `write_f64`), tested without Python.

use crate::ledger::{self, Layout};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

/// Nesting beyond this goes to the fallback (orjson's own limit is higher; this bounds our stack).
const MAX_DEPTH: u32 = 64;

/// Appends `text` as a JSON string: quotes, `\"`, `\\`, the short escapes and `\u00XX` for the
/// other control characters; everything else (non-ASCII included) as UTF-8, as orjson does.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a float the way orjson does: the shortest text that reads back to the same value,
/// `null` for NaN and the infinities (JSON has neither).
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        let mut buffer = ryu::Buffer::new();
        let text = buffer.format_finite(value).as_bytes();
        match text.iter().position(|&b| b == b'e') {
            // orjson (like Python's repr) writes a positive exponent with its sign: 1e+300.
            Some(e) if text.get(e + 1) != Some(&b'-') => {
                out.extend_from_slice(&text[..=e]);
                out.push(b'+');
                out.extend_from_slice(&text[e + 1..]);
            }
            _ => out.extend_from_slice(text),
        }
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends an integer.
pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(value).as_bytes());
}

/// Writes `value` natively when it is plain JSON data; returns false (leaving `out` as it may be
/// partly written) when some part of it is not.
fn write_plain(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, depth: u32) -> bool {
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(text) = value.cast_exact::<PyString>() {
        match text.to_str() {
            Ok(text) => write_str(out, text),
            Err(_) => return false, // lone surrogates: orjson's error, through the fallback
        }
    } else if value.is_exact_instance_of::<PyBool>() {
        out.extend_from_slice(if value.is_truthy().unwrap_or(false) {
            b"true"
        } else {
            b"false"
        });
    } else if value.is_exact_instance_of::<PyInt>() {
        match value.extract::<i64>() {
            Ok(number) => write_i64(out, number),
            Err(_) => match value.extract::<u64>() {
                Ok(number) => out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes()),
                Err(_) => return false,
            },
        }
    } else if let Ok(number) = value.cast_exact::<PyFloat>() {
        write_f64(out, number.value());
    } else if depth >= MAX_DEPTH {
        return false;
    } else if let Ok(dict) = value.cast_exact::<PyDict>() {
        out.push(b'{');
        for (n, (key, item)) in dict.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let Ok(key) = key.cast_exact::<PyString>() else {
                return false;
            };
            let Ok(key) = key.to_str() else {
                return false;
            };
            write_str(out, key);
            out.push(b':');
            if !write_plain(out, &item, depth + 1) {
                return false;
            }
        }
        out.push(b'}');
    } else if let Ok(list) = value.cast_exact::<PyList>() {
        return write_array(out, list.iter(), depth);
    } else if let Ok(tuple) = value.cast_exact::<PyTuple>() {
        return write_array(out, tuple.iter(), depth);
    } else {
        return false;
    }
    true
}

/// Writes a list's or tuple's items as a JSON array (see `write_plain`).
fn write_array<'py>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: u32,
) -> bool {
    out.push(b'[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if !write_plain(out, &item, depth + 1) {
            return false;
        }
    }
    out.push(b']');
    true
}

/// True when `key` can be a JetStream KV key: `[-/_=.a-zA-Z0-9]+`, not starting or ending with a
/// dot (the rule `hulk.messaging.kvstore.is_valid_key` applies).
pub fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let allowed =
        |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.');
    !bytes.is_empty()
        && bytes[0] != b'.'
        && bytes[bytes.len() - 1] != b'.'
        && bytes.iter().all(allowed)
}

/// The record's keys, in `Task.to_dict()`'s order, each with the text before its value and the
/// slot it is read from.
const KEYS: [(&str, usize); 18] = [
    ("{\"id\":", ledger::ID),
    (",\"type\":", ledger::TYPE),
    (",\"payload\":", ledger::PAYLOAD),
    (",\"tenant\":", ledger::TENANT),
    (",\"idempotency_key\":", ledger::IDEMPOTENCY_KEY),
    (",\"attempt\":", ledger::ATTEMPT),
    (",\"max_retries\":", ledger::MAX_RETRIES),
    (",\"timeout\":", ledger::TIMEOUT),
    (",\"priority\":", ledger::PRIORITY),
    (",\"status\":", ledger::STATUS),
    (",\"created_at\":", ledger::CREATED_AT),
    (",\"queued_at\":", ledger::QUEUED_AT),
    (",\"started_at\":", ledger::STARTED_AT),
    (",\"finished_at\":", ledger::FINISHED_AT),
    (",\"run_at\":", ledger::RUN_AT),
    (",\"trace\":", ledger::TRACE),
    (",\"result\":", ledger::RESULT),
    (",\"cached\":", ledger::CACHED),
];

/// Writes task records as the JSON `orjson.dumps(task.to_dict())` gives, without the dict.
#[pyclass(frozen, module = "hulk._native", name = "RecordEncoder")]
pub struct PyRecordEncoder {
    layout: Layout,
    fallback: Py<PyAny>,
}

impl PyRecordEncoder {
    /// Appends `value` as JSON: natively when it is plain data, else through the fallback.
    fn write_value(&self, out: &mut Vec<u8>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let mark = out.len();
        if !write_plain(out, value, 0) {
            out.truncate(mark);
            let encoded = self.fallback.bind(value.py()).call1((value,))?;
            out.extend_from_slice(encoded.cast::<PyBytes>()?.as_bytes());
        }
        Ok(())
    }

    fn write_record(&self, out: &mut Vec<u8>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let record = self.layout.record(task)?;
        for (key, field) in KEYS {
            out.extend_from_slice(key.as_bytes());
            let value = record.get(field)?;
            if field == ledger::STATUS && value.is_instance_of::<PyString>() {
                // A `TaskStatus` (a StrEnum): its text is its value.
                write_str(out, value.cast::<PyString>()?.to_str()?);
            } else {
                self.write_value(out, &value)?;
            }
        }
        out.extend_from_slice(b",\"error\":");
        let error = record.get(ledger::ERROR)?;
        if error.is_none() {
            out.extend_from_slice(b"null");
        } else {
            let fields = error.call_method0(pyo3::intern!(task.py(), "to_dict"))?;
            self.write_value(out, &fields)?;
        }
        out.push(b'}');
        Ok(())
    }
}

#[pymethods]
impl PyRecordEncoder {
    #[new]
    #[pyo3(signature = (task_class, fallback))]
    fn new(task_class: &Bound<'_, PyType>, fallback: Py<PyAny>) -> PyResult<Self> {
        Ok(Self {
            layout: Layout::of(task_class)?,
            fallback,
        })
    }

    /// The task's record as JSON bytes.
    fn encode<'py>(&self, task: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(512);
        self.write_record(&mut out, task)?;
        Ok(PyBytes::new(task.py(), &out))
    }

    /// `(prefix + task.id, record)` for each task: the KV messages of a group of records.
    ///
    /// Raises ValueError naming the id when a task's id cannot be a KV key.
    fn messages<'py>(
        &self,
        py: Python<'py>,
        prefix: &str,
        tasks: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut subject = String::with_capacity(prefix.len() + 40);
        let mut body = Vec::with_capacity(512);
        for task in tasks.try_iter()? {
            let task = task?;
            let id = self.layout.record(&task)?.get(ledger::ID)?;
            let key = id.cast::<PyString>()?.to_str()?;
            if !is_valid_key(key) {
                return Err(PyValueError::new_err(format!(
                    "task_id must be a valid KV key ([-/_=.a-zA-Z0-9]+, no leading or trailing dot), got {:?}",
                    key
                )));
            }
            subject.clear();
            subject.push_str(prefix);
            subject.push_str(key);
            body.clear();
            self.write_record(&mut body, &task)?;
            let pair = PyTuple::new(
                py,
                [
                    PyString::new(py, &subject).into_any(),
                    PyBytes::new(py, &body).into_any(),
                ],
            )?;
            out.append(pair)?;
        }
        Ok(out)
    }
    /// The JSON objects of `(task, previous, status, at)` transitions, grouped by event kind.
    ///
    /// Returns `{kind: (objects, count)}`: each kind's objects comma-separated (a JSON array
    /// without its brackets, so batches of several calls join with a comma), in order. The kind
    /// is "created" for a first submit (`previous` is None), else `kinds[status]` ("updated" for
    /// a status not in it). Each object is `{"task_id", "type", "tenant", "attempt", "at"}`, plus
    /// `"error": "<type>: <message>"` for a "retrying" or "failed" transition of a task with an
    /// error, as `NatsEventSink` writes them.
    fn events<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        kinds: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut groups: Vec<(Bound<'py, PyString>, Vec<u8>, usize)> = Vec::new();
        let created = PyString::new(py, "created");
        let updated = PyString::new(py, "updated");
        crate::events::each_event(
            events,
            "RecordEncoder.events",
            |task, previous, status, at| {
                let kind = if previous.is_none() {
                    created.clone()
                } else {
                    match kinds.get_item(status)? {
                        Some(kind) => kind.cast_into::<PyString>()?,
                        None => updated.clone(),
                    }
                };
                let at = at.extract::<f64>()?;
                // Kinds are few: a short scan of the groups, by identity (the `kinds` values and the
                // two constants) or else by text.
                let text = kind.to_str()?;
                let index = match groups.iter().position(|(k, _, _)| {
                    k.as_ptr() == kind.as_ptr() || k.to_str().ok() == Some(text)
                }) {
                    Some(index) => index,
                    None => {
                        groups.push((kind.clone(), Vec::with_capacity(4096), 0));
                        groups.len() - 1
                    }
                };
                let (_, out, count) = &mut groups[index];
                if *count > 0 {
                    out.push(b',');
                }
                *count += 1;
                let record = self.layout.record(task)?;
                out.extend_from_slice(b"{\"task_id\":");
                self.write_value(out, &record.get(ledger::ID)?)?;
                out.extend_from_slice(b",\"type\":");
                self.write_value(out, &record.get(ledger::TYPE)?)?;
                out.extend_from_slice(b",\"tenant\":");
                self.write_value(out, &record.get(ledger::TENANT)?)?;
                out.extend_from_slice(b",\"attempt\":");
                self.write_value(out, &record.get(ledger::ATTEMPT)?)?;
                out.extend_from_slice(b",\"at\":");
                write_f64(out, at);
                if text == "retrying" || text == "failed" {
                    let error = record.get(ledger::ERROR)?;
                    if !error.is_none() {
                        let message = format!(
                            "{}: {}",
                            error.getattr(pyo3::intern!(py, "type"))?.str()?,
                            error.getattr(pyo3::intern!(py, "message"))?.str()?
                        );
                        out.extend_from_slice(b",\"error\":");
                        write_str(out, &message);
                    }
                }
                out.push(b'}');
                Ok(())
            },
        )?;
        let out = PyDict::new(py);
        for (kind, objects, count) in groups {
            out.set_item(kind, (PyBytes::new(py, &objects), count))?;
        }
        Ok(out)
    }
}

/// True when `key` can be a JetStream KV key (and so a task id): `[-/_=.a-zA-Z0-9]+`, not
/// starting or ending with a dot.
#[pyfunction]
#[pyo3(name = "is_kv_key")]
fn py_is_kv_key(key: &str) -> bool {
    is_valid_key(key)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRecordEncoder>()?;
    m.add_function(wrap_pyfunction!(py_is_kv_key, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_what_json_requires_and_nothing_else() {
        assert_eq!(text(|o| write_str(o, "plain")), "\"plain\"");
        assert_eq!(
            text(|o| write_str(o, "a\"b\\c\nd\re\tf\u{8}\u{c}")),
            r#""a\"b\\c\nd\re\tf\b\f""#
        );
        assert_eq!(text(|o| write_str(o, "\u{1}\u{1f}")), r#""\u0001\u001f""#);
        assert_eq!(text(|o| write_str(o, "héllo ✓ /")), "\"héllo ✓ /\"");
        assert_eq!(text(|o| write_str(o, "")), "\"\"");
    }

    #[test]
    fn floats_are_shortest_and_non_finite_is_null() {
        assert_eq!(text(|o| write_f64(o, 1.0)), "1.0");
        assert_eq!(text(|o| write_f64(o, 0.1)), "0.1");
        assert_eq!(
            text(|o| write_f64(o, 1_796_471_848.854_617_4)),
            "1796471848.8546174"
        );
        assert_eq!(text(|o| write_f64(o, 1e300)), "1e+300");
        assert_eq!(text(|o| write_f64(o, 5e-324)), "5e-324");
        assert_eq!(text(|o| write_f64(o, f64::NAN)), "null");
        assert_eq!(text(|o| write_f64(o, f64::INFINITY)), "null");
        assert_eq!(text(|o| write_i64(o, -42)), "-42");
    }

    #[test]
    fn kv_keys_follow_the_bucket_rule() {
        assert!(is_valid_key("0193a8b2-7c1e-7d3a-9f00-0123456789ab"));
        assert!(is_valid_key("a.b/c=d_e"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key(".a"));
        assert!(!is_valid_key("a."));
        assert!(!is_valid_key("a b"));
        assert!(!is_valid_key("a*"));
        assert!(!is_valid_key("é"));
    }
}
