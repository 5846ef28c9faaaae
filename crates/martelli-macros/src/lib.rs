//! Procedural macros for [martelli](https://docs.rs/martelli).
//!
//! `#[martelli::task]`, which registers a function so that process and cluster workers can run it by
//! name, arrives with the process-pool backend. This crate is empty until then.
