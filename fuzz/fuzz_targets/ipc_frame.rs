//! The process pool's frame reader and envelope decoder on arbitrary bytes, frame after frame: never a
//! panic, never a read past the maximum frame size, and every header it accepts encodes back to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    martelli::fuzz_frame(data);
});
