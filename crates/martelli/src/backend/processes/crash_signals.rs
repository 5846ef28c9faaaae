//! A worker's crash signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE) kill it, so that a task that gets one
//! resolves as `WorkerDied` with the signal.
//!
//! A *fault* — an invalid access, a bus error, an illegal instruction, a division trap — kills a
//! process by its signal whatever a handler does: the faulting instruction runs again when the
//! handler returns, until the default action ends the process. A signal *sent* to the process —
//! `raise(SIGSEGV)` in a C library, `kill -SEGV <pid>` — is another matter. Rust's runtime installs
//! a handler for SIGSEGV and SIGBUS to report stack overflows: a fault on a thread's guard page
//! prints "thread '…' has overflowed its stack" and aborts; for any other address the handler
//! restores the default action and *returns*. For a fault that is right (the fault comes again and
//! kills); for a sent signal `raise` just returns, and the task went on to resolve `Ok`.
//!
//! So [`install`] (called by `init` in a worker) puts a handler in front of the runtime's for
//! SIGSEGV and SIGBUS: a signal sent by a process (`si_code <= 0`: `SI_USER`, `SI_TKILL`,
//! `SI_QUEUE`, …) takes the default action — the handler restores it and raises the signal again,
//! which is delivered as the handler returns and kills the process; a fault goes on to the
//! runtime's handler, so a stack overflow is still reported as before. SIGILL and SIGFPE, which the
//! runtime does not handle, get their default action outright (a process may inherit them ignored),
//! and all four are unblocked (a signal mask is inherited too).
//!
//! Rules:
//!
//! 1. The handler runs in signal context: it reads only [`PREVIOUS`], which is written before the
//!    handler is installed and never after, and makes only async-signal-safe calls (`sigaction`,
//!    `raise`).
//! 2. A previous handler is called only if it was installed with `SA_SIGINFO` (so it takes the
//!    three arguments the kernel gave this one) and is not this handler.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The signals given a handler in front of the runtime's, and the handler each had before.
const HANDLED: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];
/// The signals that get their default action outright.
const DEFAULTED: [libc::c_int; 2] = [libc::SIGILL, libc::SIGFPE];

/// The `SA_SIGINFO` handler each of [`HANDLED`] had before [`install`], or 0 (rule 1).
static PREVIOUS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

type SigInfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void);

/// Makes this process's crash signals kill it (see the [module docs](self)). Call it before any
/// thread is started.
pub(super) fn install() {
    for &signum in &DEFAULTED {
        default_action(signum);
    }
    for (index, &signum) in HANDLED.iter().enumerate() {
        // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty mask, no flags); the
        // kernel fills it in.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reads the current action into `old`, a valid `sigaction`.
        if unsafe { libc::sigaction(signum, std::ptr::null(), &mut old) } != 0 {
            continue;
        }
        let ours = on_crash_signal as SigInfoHandler as usize;
        let previous = if old.sa_flags & libc::SA_SIGINFO != 0 && old.sa_sigaction != ours {
            old.sa_sigaction
        } else {
            0
        };
        PREVIOUS[index].store(previous, Ordering::SeqCst);
        // SAFETY: as above.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = ours;
        // On the alternate stack the runtime set up, as its own handler is: a stack overflow leaves
        // no room on the thread's own stack.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `action` is fully initialised; `on_crash_signal` keeps rule 1.
        unsafe { libc::sigaction(signum, &action, std::ptr::null_mut()) };
    }
    // SAFETY: an empty set is then filled with valid signal numbers; `pthread_sigmask` only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signum in HANDLED.iter().chain(&DEFAULTED) {
            libc::sigaddset(&mut set, signum);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Restores the default action of `signum`. Async-signal-safe (rule 1).
fn default_action(signum: libc::c_int) {
    // SAFETY: an all-zero `sigaction` is SIG_DFL with an empty mask and no flags.
    let action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `action` is a valid `sigaction`; `sigaction` is async-signal-safe.
    unsafe { libc::sigaction(signum, &action, std::ptr::null_mut()) };
}

/// The handler for [`HANDLED`] (rules 1 and 2).
extern "C" fn on_crash_signal(
    signum: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut c_void,
) {
    // SAFETY: the kernel passes a valid `siginfo_t` to a handler installed with SA_SIGINFO.
    let sent = info.is_null() || unsafe { (*info).si_code } <= 0;
    if !sent {
        let previous = HANDLED
            .iter()
            .position(|&s| s == signum)
            .map_or(0, |index| PREVIOUS[index].load(Ordering::SeqCst));
        if previous != libc::SIG_DFL && previous != libc::SIG_IGN {
            // SAFETY: rule 2: `previous` is a handler installed with SA_SIGINFO, so it has this
            // signature, and it is not this function.
            let previous: SigInfoHandler = unsafe { std::mem::transmute(previous) };
            previous(signum, info, context);
            return;
        }
    }
    default_action(signum);
    if sent {
        // Blocked while this handler runs: delivered, with the default action, as it returns.
        // SAFETY: `raise` is async-signal-safe.
        unsafe { libc::raise(signum) };
    }
    // A fault without a previous handler runs its instruction again, and the default action ends
    // the process.
}
