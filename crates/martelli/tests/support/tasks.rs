//! Tasks that more than one self-hosting test binary (`harness = false`, its own worker program)
//! needs. Each binary includes this file as a module, so that the tasks are registered in it.
#![allow(dead_code)] // not every binary submits every task

use std::io::Write;
use std::time::Duration;

#[martelli::task]
pub(crate) fn parse_number(text: String) -> Result<u64, std::num::ParseIntError> {
    text.trim().parse()
}

#[martelli::task]
pub(crate) fn panics(message: String) -> u32 {
    panic!("{message}")
}

#[martelli::task]
pub(crate) fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[martelli::task]
pub(crate) fn worker_pid() -> u32 {
    std::process::id()
}

/// Writes a note on stderr, then aborts its process.
#[martelli::task]
pub(crate) fn abort_with_note() {
    eprintln!("note from the task: about to abort");
    std::process::abort();
}

/// Dies of SIGSEGV.
#[martelli::task]
pub(crate) fn segfault() {
    // Rust's runtime handles SIGSEGV (to report stack overflows); restore the default action, which
    // kills the process, as a real invalid access would.
    // SAFETY: setting a signal's action to SIG_DFL and raising it are sound at any time.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
}

/// Appends `n` as a line to the file at `path` (one `write` with `O_APPEND`, so lines from several
/// workers never mix) and returns it: a test counts how many times each task ran.
#[martelli::task]
pub(crate) fn record(path: String, n: u64) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .expect("the record file opens");
    file.write_all(format!("{n}\n").as_bytes())
        .expect("the record is written");
    n
}
