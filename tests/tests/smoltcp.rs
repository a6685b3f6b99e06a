//! The core serving on smoltcp (a no_std TCP/IP stack) through `nbecho-smoltcp`, with
//! smoltcp clients on the loopback device: exact bytes, half-close, a reset, capacity.

use nbecho_smoltcp::Timeouts;
use nbecho_tests::smol::{run, run_with, SmolClient};
use smoltcp::time::Duration;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn upper(data: &[u8]) -> Vec<u8> {
    data.to_ascii_uppercase()
}

fn client(len: usize, seed: u8, connect_at_ms: u64) -> SmolClient {
    SmolClient {
        payload: payload(len, seed),
        reset_after: None,
        keep_open: false,
        connect_at_ms,
    }
}

#[test]
fn several_connections_get_exact_echoes_then_a_clean_close() {
    let clients = [
        client(20_000, 1, 0),
        client(5_000, 2, 0),
        client(1, 3, 5),
        client(0, 4, 10),
    ];
    let report = run::<4>(4, &clients);
    for (i, (c, got)) in clients.iter().zip(&report.clients).enumerate() {
        assert_eq!(got.received, upper(&c.payload), "client {i}");
        assert!(got.got_fin && !got.was_reset, "client {i}: {got:?}");
    }
    let st = report.stats;
    assert_eq!((st.accepted, st.closed, st.active, st.failed), (4, 4, 0, 0));
    assert_eq!((st.bytes_in, st.bytes_out), (25_001, 25_001));
}

#[test]
fn a_reset_client_is_dropped_and_the_others_are_unaffected() {
    let mut reset = client(50_000, 5, 0);
    reset.reset_after = Some(10_000);
    let clients = [client(30_000, 6, 0), reset, client(30_000, 7, 0)];
    let report = run::<4>(4, &clients);
    assert_eq!(report.clients[0].received, upper(&clients[0].payload));
    assert_eq!(report.clients[2].received, upper(&clients[2].payload));
    assert!(report.clients[1].received.len() <= 10_000);
    assert!(upper(&clients[1].payload).starts_with(&report.clients[1].received));
    let st = report.stats;
    assert_eq!((st.failed, st.closed, st.active), (1, 3, 0));
    assert_eq!(st.bytes_in, st.bytes_out + st.bytes_dropped);
}

#[test]
fn beyond_capacity_a_connection_is_refused_then_later_ones_are_served() {
    // The core holds 2; 4 sockets listen, so the third is accepted by smoltcp and refused
    // by the core: closed in order (a FIN, as the std adapter does), what it sends thrown
    // away. Once the first two are done, a fourth is served.
    let clients = [
        client(8_000, 8, 0),
        client(8_000, 9, 0),
        client(8_000, 10, 0),
        client(3_000, 11, 2_000),
    ];
    let report = run::<4>(2, &clients);
    let refused: Vec<usize> = (0..3)
        .filter(|&i| report.clients[i].received.is_empty())
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", report.clients);
    let refused = &report.clients[refused[0]];
    assert!(refused.got_fin && !refused.was_reset, "{refused:?}");
    for (i, (c, got)) in clients.iter().zip(&report.clients).enumerate() {
        if !got.received.is_empty() {
            assert_eq!(got.received, upper(&c.payload), "client {i}");
            assert!(got.got_fin, "client {i}");
        }
    }
    assert_eq!(report.clients[3].received, upper(&clients[3].payload));
    let st = report.stats;
    assert_eq!((st.accepted, st.refused, st.active), (3, 1, 0));
}

#[test]
fn a_refused_peer_that_never_closes_is_reset_after_the_release_timeout() {
    // The core holds 1 and `held` keeps it. `stubborn` is refused in order (FIN) but
    // never closes its side: its socket may finish its close for 2 s, then it is reset
    // and listens again, so `late` finds a listening socket (and is refused in order).
    let mut held = client(100, 12, 0);
    held.keep_open = true;
    let mut stubborn = client(100, 13, 10);
    stubborn.keep_open = true;
    let late = client(100, 14, 4_000);
    let mut timeouts = Timeouts::default();
    timeouts.release = Duration::from_secs(2);
    let report = run_with::<2>(1, &[held, stubborn, late], timeouts);
    let [held, stubborn, late] = &report.clients[..] else {
        unreachable!()
    };
    assert_eq!(held.received, upper(&payload(100, 12)));
    assert!(
        stubborn.received.is_empty() && stubborn.got_fin,
        "{stubborn:?}"
    );
    assert!(stubborn.was_reset, "{stubborn:?}");
    assert!(late.got_fin && !late.was_reset, "{late:?}");
    assert_eq!(report.stats.refused, 2);
}
