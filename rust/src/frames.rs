//! NATS protocol frames (`PUB`, `HPUB`) for a group of messages, in one buffer.
//!
//! `hulk.messaging.frames` hands pre-formatted frames to nats-py's outgoing buffer; formatting
//! them in Python (a subject check, encodes and a `%`-format per message) cost about 0.7 µs a
//! message. `pub_frames` formats a whole group in one call. It only writes what it can vouch
//! for: subjects and replies of printable ASCII without spaces, header names that are HTTP
//! tokens, header values of printable ASCII with nothing to trim, payloads within the server's
//! limit. Anything else raises ValueError, and the Python caller formats that group itself
//! (which raises nats-py's own error where there is one).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// True for a subject (or reply) nats-py would send unchanged: printable ASCII, no space.
pub fn plain_subject(subject: &[u8]) -> bool {
    !subject.is_empty() && subject.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// True for an RFC 7230 token (a header name nats-py accepts).
pub fn token(name: &[u8]) -> bool {
    const EXTRA: &[u8] = b"!#$%&'*+-.^_`|~";
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || EXTRA.contains(b))
}

/// True for a header value nats-py would send unchanged (`strip()` and CR/LF removal are no-ops).
pub fn plain_value(value: &[u8]) -> bool {
    value.iter().all(|b| (0x20..=0x7e).contains(b))
        && value.first() != Some(&b' ')
        && value.last() != Some(&b' ')
}

/// Appends one frame: `PUB subject [reply] size` or, with header lines, `HPUB subject [reply]
/// header_size total_size`, then the payload.
pub fn write_frame(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: &[u8],
    headers: &[u8],
    payload: &[u8],
) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(if headers.is_empty() {
        b"PUB "
    } else {
        b"HPUB "
    });
    out.extend_from_slice(subject);
    out.push(b' ');
    if !reply.is_empty() {
        out.extend_from_slice(reply);
        out.push(b' ');
    }
    if !headers.is_empty() {
        let block = HEADER_LINE.len() + headers.len() + 2;
        out.extend_from_slice(number.format(block).as_bytes());
        out.push(b' ');
        out.extend_from_slice(number.format(block + payload.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(HEADER_LINE);
        out.extend_from_slice(headers);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(number.format(payload.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

const HEADER_LINE: &[u8] = b"NATS/1.0\r\n";

fn refuse(what: &str) -> PyErr {
    PyValueError::new_err(format!("pub_frames: {what}"))
}

/// The `name: value\r\n` lines of a headers dict, or ValueError.
fn header_lines(headers: &Borrowed<'_, '_, PyDict>, out: &mut Vec<u8>) -> PyResult<()> {
    for (name, value) in headers.iter() {
        let name = name.cast::<PyString>()?.to_str()?.as_bytes();
        let value = value.cast::<PyString>()?.to_str()?.as_bytes();
        if !token(name) || !plain_value(value) {
            return Err(refuse("a header that needs nats-py's checks"));
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Frames written into one buffer, each message checked the same way.
struct Framer {
    out: Vec<u8>,
    payload_bytes: usize,
    max_payload: usize,
}

impl Framer {
    fn new(max_payload: usize) -> Self {
        Self {
            out: Vec::with_capacity(512),
            payload_bytes: 0,
            max_payload,
        }
    }

    /// Appends the frame of one message; `reply` was checked with `check_reply`.
    fn push(
        &mut self,
        subject: Borrowed<'_, '_, PyAny>,
        payload: Borrowed<'_, '_, PyAny>,
        reply: &[u8],
        header_lines: &[u8],
    ) -> PyResult<()> {
        let subject = subject.cast::<PyString>()?;
        let subject = subject.to_str()?.as_bytes();
        let payload = payload.cast::<PyBytes>()?;
        let payload = payload.as_bytes();
        if !plain_subject(subject) {
            return Err(refuse("a subject that needs nats-py's checks"));
        }
        if payload.len() > self.max_payload {
            return Err(refuse("a payload over the server's limit"));
        }
        write_frame(&mut self.out, subject, reply, header_lines, payload);
        self.payload_bytes += payload.len();
        Ok(())
    }

    fn finish(self, py: Python<'_>) -> (Bound<'_, PyBytes>, usize) {
        (PyBytes::new(py, &self.out), self.payload_bytes)
    }
}

/// `reply` when it is empty or a subject nats-py would send unchanged, else ValueError.
fn check_reply(reply: &[u8]) -> PyResult<&[u8]> {
    if reply.is_empty() || plain_subject(reply) {
        Ok(reply)
    } else {
        Err(refuse("a subject that needs nats-py's checks"))
    }
}

/// The frames of `(subject, payload, reply, headers)` messages in one buffer, and the payload bytes.
///
/// Raises ValueError for a message it does not format itself (see the module documentation).
#[pyfunction]
#[pyo3(signature = (messages, max_payload))]
pub fn pub_frames<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyAny>,
    max_payload: usize,
) -> PyResult<(Bound<'py, PyBytes>, usize)> {
    let mut framer = Framer::new(max_payload);
    let mut lines = Vec::new();
    for message in messages.try_iter()? {
        let message = message?;
        let message = message.cast::<PyTuple>()?;
        if message.len() != 4 {
            return Err(refuse("each message is (subject, payload, reply, headers)"));
        }
        let reply = message.get_borrowed_item(2)?;
        let reply = reply.cast::<PyString>()?;
        let reply = check_reply(reply.to_str()?.as_bytes())?;
        let headers = message.get_borrowed_item(3)?;
        lines.clear();
        if !headers.is_none() {
            header_lines(&headers.cast::<PyDict>()?, &mut lines)?;
        }
        framer.push(
            message.get_borrowed_item(0)?,
            message.get_borrowed_item(1)?,
            reply,
            &lines,
        )?;
    }
    Ok(framer.finish(py))
}

/// The frames of a group: `(subject, payload)` messages sharing `headers`, the last one with
/// `reply` (the others with none), in one buffer, and the payload bytes.
///
/// What `pub_frames` makes of the same messages as `(subject, payload, reply or "", headers)`,
/// without a tuple per message; the header lines are formatted once for the group. Raises
/// ValueError for a part it does not format itself.
#[pyfunction]
#[pyo3(signature = (messages, headers, reply, max_payload))]
pub fn pub_group_frames<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyList>,
    headers: Option<&Bound<'py, PyDict>>,
    reply: &str,
    max_payload: usize,
) -> PyResult<(Bound<'py, PyBytes>, usize)> {
    let reply = check_reply(reply.as_bytes())?;
    let mut lines = Vec::new();
    if let Some(headers) = headers {
        header_lines(&headers.as_borrowed(), &mut lines)?;
    }
    let mut framer = Framer::new(max_payload);
    let last = messages.len().saturating_sub(1);
    for (index, message) in messages.iter().enumerate() {
        let message = message.cast::<PyTuple>()?;
        if message.len() != 2 {
            return Err(refuse("each message of a group is (subject, payload)"));
        }
        framer.push(
            message.get_borrowed_item(0)?,
            message.get_borrowed_item(1)?,
            if index == last { reply } else { b"" },
            &lines,
        )?;
    }
    Ok(framer.finish(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pub_frames, m)?)?;
    m.add_function(wrap_pyfunction!(pub_group_frames, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(subject: &str, reply: &str, headers: &str, payload: &str) -> String {
        let mut out = Vec::new();
        write_frame(
            &mut out,
            subject.as_bytes(),
            reply.as_bytes(),
            headers.as_bytes(),
            payload.as_bytes(),
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn frames_match_the_protocol() {
        assert_eq!(frame("a.b", "", "", "hi"), "PUB a.b 2\r\nhi\r\n");
        assert_eq!(
            frame("a.b", "_INBOX.x", "", ""),
            "PUB a.b _INBOX.x 0\r\n\r\n"
        );
        // Header block: "NATS/1.0\r\n" (10) + "K: v\r\n" (6) + "\r\n" (2) = 18.
        assert_eq!(
            frame("a", "", "K: v\r\n", "xy"),
            "HPUB a 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nxy\r\n"
        );
    }

    #[test]
    fn only_plain_parts_are_formatted_natively() {
        assert!(plain_subject(b"$KV.hulk_status.0193-ab"));
        assert!(!plain_subject(b""));
        assert!(!plain_subject(b"a b"));
        assert!(!plain_subject("é".as_bytes()));
        assert!(token(b"Nats-Msg-Id"));
        assert!(!token(b"bad name"));
        assert!(!token(b""));
        assert!(plain_value(b"00-abc-01"));
        assert!(plain_value(b""));
        assert!(!plain_value(b" x"));
        assert!(!plain_value(b"x\r\ny"));
    }
}
