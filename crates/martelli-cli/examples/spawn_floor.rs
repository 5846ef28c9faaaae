//! The floor `martelli run` is measured against: run a command COUNT times, JOBS at a time, with
//! nothing but `std::process::Command` (spawn, wait; no process group, no output capture).
//!
//! ```text
//! cargo run --release -p martelli-cli --example spawn_floor -- JOBS COUNT 'true {}'
//! cargo run --release -p martelli-cli --example spawn_floor -- JOBS COUNT --argv sh -c 'echo {}'
//! ```
//!
//! By default the words form one line run with `/bin/sh -c`, as `martelli run` does; with `--argv`
//! they are the program and its arguments, as `martelli run --no-shell` does. `{}` is replaced by
//! the job number, as `martelli run … ::: 1 2 …` would.

use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let jobs = args.first().and_then(|j| j.parse::<usize>().ok());
    let count = args.get(1).and_then(|c| c.parse::<usize>().ok());
    let argv = args.get(2).is_some_and(|a| a == "--argv");
    let words = &args[args.len().min(if argv { 3 } else { 2 })..];
    let (Some(jobs), Some(count), false) = (jobs, count, words.is_empty()) else {
        eprintln!(
            "usage: spawn_floor JOBS COUNT [--argv] WORDS...  (for example: spawn_floor 2 2000 'true {{}}')"
        );
        return ExitCode::from(2);
    };
    let next = AtomicUsize::new(1);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > count {
                        return;
                    }
                    let n = i.to_string();
                    let mut command = if argv {
                        let mut c = Command::new(&words[0]);
                        c.args(words[1..].iter().map(|w| w.replace("{}", &n)));
                        c
                    } else {
                        let mut c = Command::new("/bin/sh");
                        c.arg("-c").arg(words.join(" ").replace("{}", &n));
                        c
                    };
                    let status = command.stdin(Stdio::null()).stdout(Stdio::null()).status();
                    if !status.is_ok_and(|s| s.success()) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if failed.into_inner() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
