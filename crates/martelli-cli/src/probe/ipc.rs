//! IPC: how fast a message crosses from this process to another through a pipe, a Unix socket and
//! shared memory, and what the codec costs.
//!
//! Every transport is measured the same way, as a request/acknowledge exchange: the sender hands one
//! message over, the receiver copies all of it into its own buffer and answers with one byte. This is
//! the shape of handing a task to a worker; throughput is message bytes over the time per exchange.
//!
//! # The shared-memory mapping
//!
//! [`SharedMap`] is the only `unsafe` code of the probe. Its rules:
//!
//! 1. A `SharedMap` owns a mapping of exactly `len` bytes, created by `mmap` and removed by `munmap`
//!    in `drop`, so a pointer into `[ptr, ptr + len)` is valid for as long as the value lives.
//! 2. Two processes touch the bytes in turn, never at once: the sender copies a message in, then
//!    rings the doorbell (a write to a socket); the receiver copies it out only after reading the
//!    doorbell, and acknowledges; the sender writes again only after the acknowledgement. The system
//!    calls order the accesses.
//! 3. The bytes are plain `u8`: any value is valid, so what a copy reads needs no checking.

use super::stats::{Stat, Unit, mib_per_sec};
use super::{Ctx, ProbeError};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::ptr::NonNull;
use std::time::Instant;

/// The name of the codec measured: the serde format the process backend is specified to use.
pub(crate) const CODEC: &str = "postcard";

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// IPC throughput in MiB/s per transport and message size, and the codec's costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ipc {
    pub(crate) pipe_1kib: Stat,
    pub(crate) pipe_1mib: Stat,
    pub(crate) unix_socket_1kib: Stat,
    pub(crate) unix_socket_1mib: Stat,
    pub(crate) shared_memory_1kib: Stat,
    pub(crate) shared_memory_1mib: Stat,
    pub(crate) codec: Codec,
}

/// Serialization cost of the codec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Codec {
    /// The format's name.
    pub(crate) name: String,
    /// Encoded size of the small struct, in bytes.
    pub(crate) small_struct_bytes: u64,
    /// Encode + decode of a small task-like struct, in ns.
    pub(crate) small_struct_round_trip: Stat,
    /// Encode + decode of a 1 MiB buffer declared as bytes (`serde_bytes`), in MiB/s.
    pub(crate) buffer_1mib_as_bytes: Stat,
    /// Encode + decode of a 1 MiB `Vec<u8>` left to serde's default (a sequence of u8), in MiB/s.
    pub(crate) buffer_1mib_as_seq: Stat,
}

pub(crate) fn measure(ctx: &Ctx) -> Result<Ipc, ProbeError> {
    let mbps = Unit::MibPerSec;
    let small_k = ctx.pick(300, 2_000);
    let big_k = ctx.pick(5, 40);

    ctx.step("IPC: pipe");
    let (pipe_1kib, pipe_1mib) = {
        let measure_size = |path: &str, size: usize, k: u32| {
            let mut sink = ctx.helper.spawn_piped("sink", &[size.to_string()])?;
            let msg = message(size);
            ctx.measure(path, mbps, || {
                let stdin = sink.stdin.as_mut().ok_or_else(closed)?;
                exchange(stdin, &mut sink.stdout, &msg, k)
            })
        };
        (
            measure_size("ipc.pipe_1kib", KIB, small_k)?,
            measure_size("ipc.pipe_1mib", MIB, big_k)?,
        )
    };

    ctx.step("IPC: Unix socket");
    let (unix_socket_1kib, unix_socket_1mib) = {
        let measure_size = |path: &str, size: usize, k: u32| {
            let (mut ours, theirs) = UnixStream::pair().map_err(ProbeError::Io)?;
            let theirs = OwnedFd::from(theirs);
            let child = ctx
                .helper
                .command("sink", &[size.to_string()])
                .stdin(Stdio::from(theirs.try_clone().map_err(ProbeError::Io)?))
                .stdout(Stdio::from(theirs))
                .spawn()
                .map_err(|e| ProbeError::spawn("sink", e))?;
            let _reaper = Reaper(child);
            let msg = message(size);
            let mut reader = ours.try_clone().map_err(ProbeError::Io)?;
            let stat = ctx.measure(path, mbps, || exchange(&mut ours, &mut reader, &msg, k));
            ours.shutdown(std::net::Shutdown::Both)
                .map_err(ProbeError::Io)?;
            stat
        };
        (
            measure_size("ipc.unix_socket_1kib", KIB, small_k)?,
            measure_size("ipc.unix_socket_1mib", MIB, big_k)?,
        )
    };

    ctx.step("IPC: shared memory");
    let (shared_memory_1kib, shared_memory_1mib) = {
        let measure_size = |path: &str, size: usize, k: u32| {
            let memfd = rustix::fs::memfd_create("martelli-probe", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| ProbeError::Io(e.into()))?;
            rustix::fs::ftruncate(&memfd, size as u64).map_err(|e| ProbeError::Io(e.into()))?;
            let map = SharedMap::map(memfd.as_fd(), size)?;
            let (mut bell, theirs) = UnixStream::pair().map_err(ProbeError::Io)?;
            let child = ctx
                .helper
                .command("shm", &[size.to_string()])
                .stdin(Stdio::from(OwnedFd::from(theirs)))
                .stdout(Stdio::from(memfd))
                .spawn()
                .map_err(|e| ProbeError::spawn("shm", e))?;
            let _reaper = Reaper(child);
            let msg = message(size);
            let stat = ctx.measure(path, mbps, || {
                let start = Instant::now();
                let mut ack = [0u8; 1];
                for _ in 0..k {
                    map.copy_in(&msg);
                    bell.write_all(b"m").map_err(ProbeError::Io)?;
                    bell.read_exact(&mut ack).map_err(ProbeError::Io)?;
                }
                Ok::<_, ProbeError>(mib_per_sec(size as u64 * u64::from(k), start.elapsed()))
            });
            bell.shutdown(std::net::Shutdown::Both)
                .map_err(ProbeError::Io)?;
            stat
        };
        (
            measure_size("ipc.shared_memory_1kib", KIB, small_k)?,
            measure_size("ipc.shared_memory_1mib", MIB, big_k)?,
        )
    };

    ctx.step("IPC: codec");
    let codec = codec(ctx)?;

    Ok(Ipc {
        pipe_1kib,
        pipe_1mib,
        unix_socket_1kib,
        unix_socket_1mib,
        shared_memory_1kib,
        shared_memory_1mib,
        codec,
    })
}

fn closed() -> ProbeError {
    ProbeError::Io(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "helper stdin closed",
    ))
}

/// A message of `size` bytes that is not all zeroes.
fn message(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Sends `msg` `k` times, waiting for the one-byte acknowledgement of each; returns MiB/s.
fn exchange(
    tx: &mut impl Write,
    rx: &mut impl Read,
    msg: &[u8],
    k: u32,
) -> Result<f64, ProbeError> {
    let start = Instant::now();
    let mut ack = [0u8; 1];
    for _ in 0..k {
        tx.write_all(msg).map_err(ProbeError::Io)?;
        tx.flush().map_err(ProbeError::Io)?;
        rx.read_exact(&mut ack).map_err(ProbeError::Io)?;
    }
    Ok(mib_per_sec(
        msg.len() as u64 * u64::from(k),
        start.elapsed(),
    ))
}

/// Ends and reaps a helper when its measurement is over, whichever way it ended: the helper has no
/// more work, and killing it cannot hang on a socket that failed to shut down.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A shared, writable mapping of a file (a memfd): see the module's rules.
#[derive(Debug)]
pub(crate) struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl SharedMap {
    /// Maps the first `len` bytes of `fd`, shared and writable.
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> Result<SharedMap, ProbeError> {
        if len == 0 {
            return Err(ProbeError::Measure(
                "a shared mapping needs at least one byte".into(),
            ));
        }
        // SAFETY: a new mapping at an address the kernel picks (null hint) overlaps no Rust object;
        // `fd` is a valid descriptor for the call's duration. Rule 1 covers the result's lifetime.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| ProbeError::Io(e.into()))?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| ProbeError::Measure("mmap returned a null mapping".into()))?;
        Ok(SharedMap { ptr, len })
    }

    /// Copies `src` (at most `len` bytes) to the start of the mapping.
    pub(crate) fn copy_in(&self, src: &[u8]) {
        let n = src.len().min(self.len);
        // SAFETY: `n <= len`, so the destination lies inside the mapping (rule 1); `src` is a Rust
        // slice, which cannot overlap a mapping created by `mmap`; no other process reads the bytes
        // while this one writes them (rule 2).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr(), n) }
    }

    /// Copies the start of the mapping into `dst` (at most `len` bytes).
    pub(crate) fn copy_out(&self, dst: &mut [u8]) {
        let n = dst.len().min(self.len);
        // SAFETY: as in `copy_in`, with the roles swapped; any byte value is a valid u8 (rule 3).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), dst.as_mut_ptr(), n) }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are the mapping `map` created, unmapped only here (rule 1).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A task as a process worker would receive it: an id, a name, arguments, a deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SmallTask {
    id: u64,
    name: String,
    attempt: u32,
    args: (u32, String),
    deadline_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct AsBytes(#[serde(with = "serde_bytes")] Vec<u8>);

fn codec(ctx: &Ctx) -> Result<Codec, ProbeError> {
    let encode_err = |e: postcard::Error| ProbeError::Measure(format!("{CODEC} failed: {e}"));
    let task = SmallTask {
        id: 42,
        name: "images::resize".into(),
        attempt: 1,
        args: (640, "photos/2024/holiday.jpg".into()),
        deadline_ms: Some(30_000),
    };
    let small_struct_bytes = postcard::to_allocvec(&task).map_err(encode_err)?.len() as u64;
    let k = ctx.pick(20_000, 100_000);
    let small_struct_round_trip =
        ctx.measure("ipc.codec.small_struct_round_trip", Unit::Nanos, || {
            super::stats::per_op(k, Unit::Nanos, || {
                let bytes =
                    postcard::to_allocvec(std::hint::black_box(&task)).map_err(encode_err)?;
                let back: SmallTask = postcard::from_bytes(&bytes).map_err(encode_err)?;
                std::hint::black_box(back);
                Ok::<_, ProbeError>(())
            })
        })?;
    let buffer = AsBytes(message(MIB));
    let k = ctx.pick(10, 40);
    let buffer_1mib_as_bytes =
        ctx.measure("ipc.codec.buffer_1mib_as_bytes", Unit::MibPerSec, || {
            let start = Instant::now();
            for _ in 0..k {
                let bytes =
                    postcard::to_allocvec(std::hint::black_box(&buffer)).map_err(encode_err)?;
                let back: AsBytes = postcard::from_bytes(&bytes).map_err(encode_err)?;
                std::hint::black_box(back);
            }
            Ok::<_, ProbeError>(mib_per_sec((MIB as u64) * u64::from(k), start.elapsed()))
        })?;
    let k = ctx.pick(2, 8);
    let buffer_1mib_as_seq =
        ctx.measure("ipc.codec.buffer_1mib_as_seq", Unit::MibPerSec, || {
            let start = Instant::now();
            for _ in 0..k {
                let bytes =
                    postcard::to_allocvec(std::hint::black_box(&buffer.0)).map_err(encode_err)?;
                let back: Vec<u8> = postcard::from_bytes(&bytes).map_err(encode_err)?;
                std::hint::black_box(back);
            }
            Ok::<_, ProbeError>(mib_per_sec((MIB as u64) * u64::from(k), start.elapsed()))
        })?;
    Ok(Codec {
        name: CODEC.to_owned(),
        small_struct_bytes,
        small_struct_round_trip,
        buffer_1mib_as_bytes,
        buffer_1mib_as_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_map_round_trips_bytes() {
        let fd =
            rustix::fs::memfd_create("probe-test", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4096).expect("ftruncate");
        let a = SharedMap::map(fd.as_fd(), 4096).expect("map a");
        let b = SharedMap::map(fd.as_fd(), 4096).expect("map b");
        let msg = message(4096);
        a.copy_in(&msg);
        let mut out = vec![0u8; 4096];
        b.copy_out(&mut out);
        assert_eq!(out, msg);
        assert!(SharedMap::map(fd.as_fd(), 0).is_err());
    }

    #[test]
    fn codec_round_trips_the_measured_values() {
        let task = SmallTask {
            id: 1,
            name: "t".into(),
            attempt: 2,
            args: (3, "x".into()),
            deadline_ms: None,
        };
        let bytes = postcard::to_allocvec(&task).expect("encode");
        assert_eq!(
            postcard::from_bytes::<SmallTask>(&bytes).expect("decode"),
            task
        );
        let buf = AsBytes(message(1000));
        let bytes = postcard::to_allocvec(&buf).expect("encode");
        // A length prefix and the bytes themselves: no per-element framing.
        assert!(bytes.len() <= 1000 + 3);
        assert_eq!(
            postcard::from_bytes::<AsBytes>(&bytes).expect("decode").0,
            buf.0
        );
    }
}
