//! Fixtures shared by every test process of one test run.
//!
//! cargo-nextest runs each test in a process of its own, so a fixture that a test binary builds
//! once in a `static` (a costly run of the program under test whose output many tests read) would
//! be built again by every test. [`dir_per_run`] builds it once per test run instead, in a
//! directory that every test of the run reads.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

/// Directories of earlier runs are removed once they are this old.
const STALE: Duration = Duration::from_secs(3600);

/// The directory `BASE/NAME/RUN` for this test run, filled by `fill` once: the first test of the
/// run to ask fills it, and every other test of the run, in this process or another, waits until
/// it is filled and gets it as it is. Panics if `fill` panics (the next test to ask tries again).
///
/// The run is cargo-nextest's (`NEXTEST_RUN_ID`); under plain `cargo test`, which runs the tests
/// of a binary as threads of one process, it is this process. Directories that earlier runs left
/// under `BASE/NAME` are removed once they are an hour old. `BASE` is most often the test's
/// `env!("CARGO_TARGET_TMPDIR")`.
pub fn dir_per_run(base: &Path, name: &str, fill: impl FnOnce(&Path)) -> PathBuf {
    let run = std::env::var("NEXTEST_RUN_ID")
        .unwrap_or_else(|_| format!("process-{}", std::process::id()));
    let root = base.join(name);
    fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("cannot make the directory {}: {e}", root.display()));
    let lock_path = root.join(".lock");
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open the lock {}: {e}", lock_path.display()));
    // Held until `lock` is dropped, at the end of this call or as a panic of `fill` unwinds.
    flock(&lock, FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    let dir = root.join(&run);
    let done = dir.join(".done");
    if !done.exists() {
        remove_stale(&root, &run);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot make the directory {}: {e}", dir.display()));
        fill(&dir);
        File::create(&done).unwrap_or_else(|e| panic!("cannot write {}: {e}", done.display()));
    }
    dir
}

/// Removes the run directories under `root`, other than `run`'s, that have not changed for an
/// hour.
fn remove_stale(root: &Path, run: &str) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
        if stale && entry.file_name() != run && entry.path().is_dir() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
