//! The signal and resource-limit names of this module's API: martelli's own types, so that the
//! system-call crate underneath is not part of martelli's public API (a new major version of it is
//! then no breaking change of martelli's).

use std::fmt;

/// A Unix signal, by its name: `Signal::TERM`, `Signal::KILL`, …
///
/// ```
/// use martelli::process::Signal;
/// assert_eq!(Signal::KILL.as_raw(), 9);
/// assert_eq!(Signal::from_raw(15), Some(Signal::TERM));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signal(rustix::process::Signal);

macro_rules! signals {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        impl Signal {
            $( $(#[$doc])* pub const $name: Signal = Signal(rustix::process::Signal::$name); )*

            /// The signal's conventional name, as `kill -l` spells it without `SIG` (`"TERM"`).
            pub fn name(self) -> Option<&'static str> {
                $( if self == Signal::$name { return Some(signals!(@name $name)); } )*
                None
            }
        }
    };
    (@name ALARM) => { "ALRM" };
    (@name CHILD) => { "CHLD" };
    (@name ABORT) => { "ABRT" };
    (@name VTALARM) => { "VTALRM" };
    (@name POWER) => { "PWR" };
    (@name $name:ident) => { stringify!($name) };
}

signals! {
    /// `SIGHUP`: the terminal hung up.
    HUP;
    /// `SIGINT`: Ctrl-C.
    INT;
    /// `SIGQUIT`: Ctrl-\.
    QUIT;
    /// `SIGILL`: an illegal instruction.
    ILL;
    /// `SIGTRAP`: a breakpoint.
    TRAP;
    /// `SIGABRT`: `abort()`.
    ABORT;
    /// `SIGBUS`: a bus error.
    BUS;
    /// `SIGFPE`: an arithmetic error.
    FPE;
    /// `SIGKILL`: cannot be caught or ignored.
    KILL;
    /// `SIGUSR1`.
    USR1;
    /// `SIGSEGV`: an invalid memory access.
    SEGV;
    /// `SIGUSR2`.
    USR2;
    /// `SIGPIPE`: a write to a pipe nobody reads.
    PIPE;
    /// `SIGALRM`: a timer expired.
    ALARM;
    /// `SIGTERM`: please exit.
    TERM;
    /// `SIGCHLD`: a child stopped or exited.
    CHILD;
    /// `SIGCONT`: continue if stopped.
    CONT;
    /// `SIGSTOP`: stop; cannot be caught or ignored.
    STOP;
    /// `SIGTSTP`: Ctrl-Z.
    TSTP;
    /// `SIGTTIN`: a background read from the terminal.
    TTIN;
    /// `SIGTTOU`: a background write to the terminal.
    TTOU;
    /// `SIGURG`: urgent data on a socket.
    URG;
    /// `SIGXCPU`: the CPU-time limit was exceeded.
    XCPU;
    /// `SIGXFSZ`: the file-size limit was exceeded.
    XFSZ;
    /// `SIGVTALRM`: a virtual timer expired.
    VTALARM;
    /// `SIGPROF`: a profiling timer expired.
    PROF;
    /// `SIGWINCH`: the terminal was resized.
    WINCH;
    /// `SIGIO`: I/O is possible.
    IO;
    /// `SIGPWR`: power failure.
    POWER;
    /// `SIGSYS`: a bad system call.
    SYS;
}

impl Signal {
    /// The signal's number.
    pub const fn as_raw(self) -> i32 {
        self.0.as_raw()
    }

    /// The signal numbered `raw`, if it is one of the named signals (not a real-time one, nor 0).
    pub const fn from_raw(raw: i32) -> Option<Signal> {
        match rustix::process::Signal::from_named_raw(raw) {
            Some(signal) => Some(Signal(signal)),
            None => None,
        }
    }

    pub(crate) const fn to_rustix(self) -> rustix::process::Signal {
        self.0
    }
}

impl std::hash::Hash for Signal {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_raw().hash(state);
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Signal::{name}"),
            None => write!(f, "Signal({})", self.as_raw()),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "SIG{name}"),
            None => write!(f, "signal {}", self.as_raw()),
        }
    }
}

/// A resource a process's limits (`setrlimit`) bound; see `getrlimit(2)` for each one's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// `RLIMIT_CPU`: CPU time, in seconds.
    Cpu,
    /// `RLIMIT_FSIZE`: the largest file the process may create, in bytes.
    Fsize,
    /// `RLIMIT_DATA`: the data segment, in bytes.
    Data,
    /// `RLIMIT_STACK`: the main thread's stack, in bytes.
    Stack,
    /// `RLIMIT_CORE`: the largest core file, in bytes.
    Core,
    /// `RLIMIT_RSS`: resident memory, in bytes (not enforced by Linux).
    Rss,
    /// `RLIMIT_NPROC`: processes (threads) of the user.
    Nproc,
    /// `RLIMIT_NOFILE`: open file descriptors, plus one.
    Nofile,
    /// `RLIMIT_MEMLOCK`: locked memory, in bytes.
    Memlock,
    /// `RLIMIT_AS`: the address space, in bytes.
    As,
    /// `RLIMIT_LOCKS`: file locks.
    Locks,
    /// `RLIMIT_SIGPENDING`: queued signals.
    Sigpending,
    /// `RLIMIT_MSGQUEUE`: bytes in POSIX message queues.
    Msgqueue,
    /// `RLIMIT_NICE`: the ceiling of the nice value.
    Nice,
    /// `RLIMIT_RTPRIO`: the real-time priority ceiling.
    Rtprio,
    /// `RLIMIT_RTTIME`: CPU time under real-time scheduling without blocking, in microseconds.
    Rttime,
}

impl Resource {
    pub(crate) const fn to_rustix(self) -> rustix::process::Resource {
        use rustix::process::Resource as R;
        match self {
            Resource::Cpu => R::Cpu,
            Resource::Fsize => R::Fsize,
            Resource::Data => R::Data,
            Resource::Stack => R::Stack,
            Resource::Core => R::Core,
            Resource::Rss => R::Rss,
            Resource::Nproc => R::Nproc,
            Resource::Nofile => R::Nofile,
            Resource::Memlock => R::Memlock,
            Resource::As => R::As,
            Resource::Locks => R::Locks,
            Resource::Sigpending => R::Sigpending,
            Resource::Msgqueue => R::Msgqueue,
            Resource::Nice => R::Nice,
            Resource::Rtprio => R::Rtprio,
            Resource::Rttime => R::Rttime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_round_trip() {
        assert_eq!(Signal::TERM.as_raw(), 15);
        assert_eq!(Signal::from_raw(9), Some(Signal::KILL));
        assert_eq!(Signal::from_raw(0), None);
        assert_eq!(Signal::ALARM.name(), Some("ALRM"));
        assert_eq!(Signal::INT.to_string(), "SIGINT");
        assert_eq!(format!("{:?}", Signal::KILL), "Signal::KILL");
        assert_eq!(
            Resource::Nofile.to_rustix(),
            rustix::process::Resource::Nofile
        );
    }
}
