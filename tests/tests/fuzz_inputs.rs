//! The fuzz target's harness on stable: random byte strings decoded into schedules with
//! `arbitrary`, exactly as `fuzz/fuzz_targets/schedule.rs` does, so CI exercises it
//! without nightly.

use nbecho_tests::fuzz_one;
use nbecho_tests::rng::Rng;

#[test]
fn thousands_of_random_inputs() {
    let mut rng = Rng::new(0xf0220);
    let runs = 3_000;
    // NBECHO_FUZZ_INPUT=i runs input i alone (with NBECHO_TRACE=1 to see its steps).
    let only: Option<usize> = std::env::var("NBECHO_FUZZ_INPUT")
        .ok()
        .and_then(|v| v.parse().ok());
    for i in 0..runs {
        let len = rng.range(0, 512) as usize;
        let data = rng.bytes(len);
        if only.is_some_and(|only| only != i) {
            continue;
        }
        if let Err(e) = fuzz_one(&data) {
            panic!(
                "input {i} ({len} bytes: {data:02x?}) failed: {e}\n\
                 rerun this input: NBECHO_FUZZ_INPUT={i} cargo test -p nbecho-tests --test fuzz_inputs"
            );
        }
    }
}

#[test]
fn degenerate_inputs() {
    for data in [&[][..], &[0], &[0xff; 64], &[0; 4096]] {
        fuzz_one(data).unwrap();
    }
}
