//! Arbitrary bytes → a schedule of clients and faults → the simulated network, with every
//! guarantee checked after every step. `tests/tests/fuzz_inputs.rs` runs the same
//! function on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = nbecho_tests::fuzz_one(data) {
        panic!("{failure}");
    }
});
