//! The cluster client's result-envelope decoder on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    martelli::cluster::fuzzing::result_envelope(data);
});
