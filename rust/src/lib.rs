//! `hulk._native`: the hot path of the hulk task runtime.
//!
//! This file only registers each concept's module; the algorithms live in their own files as plain
//! Rust with `#[cfg(test)]` tests, wrapped in thin `#[pyclass(frozen)]` types.

// Tests may unwrap: a failing unwrap is a failing test.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use pyo3::prelude::*;

pub mod backoff;
pub mod breaker;
pub mod cache;
pub mod clock;
pub mod counters;
pub mod errors;
pub mod events;
pub mod frames;
pub mod ledger;
pub mod queue;
pub mod records;
pub mod runner;

/// The native module. Users import it as `hulk.native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    errors::register(m)?;
    clock::register(m)?;
    counters::register(m)?;
    queue::register(m)?;
    backoff::register(m)?;
    breaker::register(m)?;
    cache::register(m)?;
    ledger::register(m)?;
    events::register(m)?;
    records::register(m)?;
    frames::register(m)?;
    runner::register(m)?;
    Ok(())
}
