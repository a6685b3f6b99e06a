//! The core serving on smoltcp (a no_std TCP/IP stack) through `nbecho-smoltcp`, with
//! smoltcp clients on the loopback device: exact bytes, half-close, a reset, capacity.

use nbecho_tests::smol::{run, SmolClient};

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
    // by the core with a reset (it was sending: see `SmolStream::close`). Once the first
    // two are done, a fourth is served.
    let clients = [
        client(8_000, 8, 0),
        client(8_000, 9, 0),
        client(8_000, 10, 0),
        client(3_000, 11, 2_000),
    ];
    let report = run::<4>(2, &clients);
    let refused: Vec<usize> = (0..3).filter(|&i| report.clients[i].was_reset).collect();
    assert_eq!(refused.len(), 1, "{:?}", report.clients);
    for i in (0..4).filter(|i| !refused.contains(i)) {
        assert_eq!(
            report.clients[i].received,
            upper(&clients[i].payload),
            "client {i}"
        );
        assert!(report.clients[i].got_fin);
    }
    assert!(report.clients[refused[0]].received.is_empty());
    let st = report.stats;
    assert_eq!((st.accepted, st.refused, st.active), (3, 1, 0));
}
