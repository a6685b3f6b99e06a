//! The nbecho core serving on smoltcp's loopback device (no OS sockets), with three smoltcp
//! clients: `cargo run -p nbecho-tests --example smoltcp_echo`.

use nbecho_tests::smol::{run, SmolClient};

fn main() {
    let messages: [&[u8]; 3] = [
        b"hello from smoltcp",
        b"Mixed Case 123",
        b"no_std all the way down",
    ];
    let clients: Vec<SmolClient> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| SmolClient {
            payload: m.to_vec(),
            reset_after: None,
            keep_open: false,
            connect_at_ms: i as u64,
        })
        .collect();
    let report = run::<4>(4, &clients);
    for (sent, got) in messages.iter().zip(&report.clients) {
        println!(
            "{:?} -> {:?}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(&got.received)
        );
    }
    println!("after {} virtual ms: {}", report.millis, report.stats);
}
