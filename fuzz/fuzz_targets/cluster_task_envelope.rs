//! The cluster worker's task-envelope decoder on arbitrary bytes: never a panic or an unbounded
//! allocation, and every envelope it accepts encodes and decodes to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    martelli::cluster::fuzzing::task_envelope(data);
});
