//! The async driver on embassy-net, tested on the host: two embassy-net stacks (the
//! server's at 10.0.0.1, the clients' at 10.0.0.2) joined by embassy-net-driver-channel
//! devices, so that the clients are a real TCP implementation (smoltcp's), over a wire
//! that exists only in this process.
#![cfg(feature = "embassy-net")]

use core::future::Future;
use core::time::Duration as StdDuration;

use embassy_futures::select::{select, Either};
use embassy_net::tcp::TcpSocket;
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_driver_channel as channel;
use embedded_io_async::{Read, Write};
use nbecho_async::embassy::{Clock, Pool, PoolListener, Timeouts};
use nbecho_async::{serve, Conn, Cx, Listen, Wakers};
use nbecho_core::{Config, Driver, Duration, Scheduling, Server, Slot, Stats, Storage, Uppercase};

const MTU: usize = 1500;
const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const CLIENT: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const PORT: u16 = 7;
/// Socket buffers, each way: small, so that messages span several reads and writes.
const SOCKET_BUFFER: usize = 1024;

type Device = channel::Device<'static, MTU>;
type Wire = channel::Runner<'static, MTU>;

fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

fn stack(
    address: Ipv4Address,
    seed: u64,
) -> (Stack<'static>, embassy_net::Runner<'static, Device>, Wire) {
    let (mut wire, device) = channel::new(
        leak(channel::State::<MTU, 8, 8>::new()),
        channel::driver::HardwareAddress::Ip,
    );
    wire.set_link_state(channel::driver::LinkState::Up);
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(address, 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let (stack, runner) = embassy_net::new(device, config, leak(StackResources::<16>::new()), seed);
    (stack, runner, wire)
}

/// Carries every packet one stack sends to the other, until dropped.
async fn carry(
    from: &mut channel::TxRunner<'static, MTU>,
    to: &mut channel::RxRunner<'static, MTU>,
) {
    loop {
        let packet = from.tx_buf().await;
        let room = to.rx_buf().await;
        let n = packet.len();
        room[..n].copy_from_slice(packet);
        to.rx_done(n);
        from.tx_done();
    }
}

fn socket(stack: Stack<'static>) -> TcpSocket<'static> {
    TcpSocket::new(stack, leak([0; SOCKET_BUFFER]), leak([0; SOCKET_BUFFER]))
}

/// Runs a server of `capacity` connections with `POOL` sockets, and `clients` (given the
/// client stack) until they are done; then stops the server (grace 5 s). Returns the
/// server's counters and how long the stop took.
fn run<const POOL: usize, F, Fut>(
    wakers: &'static Wakers<8>,
    capacity: usize,
    clients: F,
) -> (Stats, StdDuration)
where
    F: FnOnce(Stack<'static>) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (server_stack, mut server_net, server_wire) = stack(SERVER, 1);
        let (client_stack, mut client_net, client_wire) = stack(CLIENT, 2);
        let (_, mut server_rx, mut server_tx) = server_wire.split();
        let (_, mut client_rx, mut client_tx) = client_wire.split();
        let network = async {
            embassy_futures::join::join4(
                server_net.run(),
                client_net.run(),
                carry(&mut server_tx, &mut client_rx),
                carry(&mut client_tx, &mut server_rx),
            )
            .await;
        };

        let mut pool = Pool::new(
            core::array::from_fn::<_, POOL, _>(|_| socket(server_stack)),
            PORT,
            Timeouts::default(),
        );
        let mut slots = vec![Slot::EMPTY; capacity];
        let mut arena = vec![0u8; capacity * 256];
        let storage = Storage::new(&mut slots, &mut arena, 256).unwrap();
        let mut config = Config::default();
        config.scheduling = Scheduling::Readiness;
        let server = Server::new(config, storage, Uppercase);
        let mut streams: Vec<Option<Conn<_>>> = (0..capacity).map(|_| None).collect();
        let mut driver = Driver::new(server, Listen(PoolListener), &mut streams).unwrap();
        let mut cx = Cx::new(wakers, &mut pool);

        let stop_at = core::cell::Cell::new(None);
        let stop = async {
            clients(client_stack).await;
            stop_at.set(Some(std::time::Instant::now()));
        };
        let served = serve(&mut driver, &mut cx, Clock, stop, Duration::from_secs(5));
        let test = async {
            let stats = tokio::time::timeout(StdDuration::from_secs(30), served)
                .await
                .expect("the test did not finish in 30 s")
                .unwrap();
            (
                stats,
                stop_at
                    .get()
                    .expect("stopped before the clients were done")
                    .elapsed(),
            )
        };
        match select(network, test).await {
            Either::First(()) => unreachable!("the network runs for ever"),
            Either::Second(result) => result,
        }
    })
}

async fn connect(stack: Stack<'static>) -> TcpSocket<'static> {
    let mut socket = socket(stack);
    socket.connect((SERVER, PORT)).await.expect("connect");
    socket
}

/// Sends `msg` (with `write_all`: it may exceed the socket buffers) and expects exactly
/// its uppercase back.
async fn echo(socket: &mut TcpSocket<'static>, msg: &[u8]) {
    let (mut reader, mut writer) = socket.split();
    let mut reply = vec![0; msg.len()];
    let (sent, read) =
        embassy_futures::join::join(writer.write_all(msg), reader.read_exact(&mut reply)).await;
    sent.unwrap();
    read.unwrap();
    assert_eq!(reply, msg.to_ascii_uppercase());
}

async fn expect_eof(socket: &mut TcpSocket<'static>) {
    let mut buf = [0; 16];
    assert_eq!(
        socket.read(&mut buf).await.unwrap(),
        0,
        "expected the server's FIN"
    );
}

fn message(client: usize, round: usize) -> Vec<u8> {
    let len = 1 + (client * 1_337 + round * 2_011) % 5_000;
    (0..len)
        .map(|i| b"the quick brown fox jumps over the lazy dog\n"[(i + client) % 44])
        .collect()
}

#[test]
fn concurrent_clients_get_byte_exact_echoes_and_a_clean_close() {
    static WAKERS: Wakers<8> = Wakers::new();
    let (stats, _) = run::<4, _, _>(&WAKERS, 3, |stack| async move {
        let client = |c: usize| async move {
            let mut socket = connect(stack).await;
            for round in 0..8 {
                echo(&mut socket, &message(c, round)).await;
            }
            socket.close(); // FIN: the server flushes, then closes
            expect_eof(&mut socket).await;
            socket.flush().await.unwrap();
        };
        embassy_futures::join::join3(client(0), client(1), client(2)).await;
    });
    assert_eq!(stats.accepted, 3, "{stats:?}");
    assert_eq!((stats.closed, stats.peer_closed), (3, 3), "{stats:?}");
    let expected: usize = (0..3)
        .flat_map(|c| (0..8).map(move |r| message(c, r).len()))
        .sum();
    assert_eq!(stats.bytes_out, expected as u64);
    assert_eq!(stats.failed + stats.forced + stats.aborted, 0, "{stats:?}");
}

#[test]
fn sockets_go_back_to_listening_and_a_connection_beyond_capacity_is_refused() {
    static WAKERS: Wakers<8> = Wakers::new();
    let (stats, _) = run::<3, _, _>(&WAKERS, 2, |stack| async move {
        // One after another, ten clients through a pool of three sockets.
        for c in 0..10 {
            let mut socket = connect(stack).await;
            echo(&mut socket, &message(c, 0)).await;
            socket.close();
            expect_eof(&mut socket).await;
            socket.flush().await.unwrap();
            // TIME-WAIT is on our side (we closed first): the server's socket is closed.
        }
        // Capacity 2, pool 3: the third concurrent connection is accepted and refused.
        let mut a = connect(stack).await;
        let mut b = connect(stack).await;
        echo(&mut a, b"first").await;
        echo(&mut b, b"second").await;
        let mut c = connect(stack).await;
        expect_eof(&mut c).await;
        echo(&mut a, b"still served").await;
        for mut socket in [a, b, c] {
            socket.close();
            socket.flush().await.unwrap();
        }
    });
    assert_eq!((stats.accepted, stats.refused), (12, 1), "{stats:?}");
}

#[test]
fn a_stop_closes_a_client_that_keeps_its_side_open_once_all_is_delivered() {
    static WAKERS: Wakers<8> = Wakers::new();
    let idle = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
    let kept = idle.clone();
    let (stats, stop_took) = run::<4, _, _>(&WAKERS, 3, |stack| async move {
        for c in 0..2 {
            let mut socket = connect(stack).await;
            echo(&mut socket, &message(c, 1)).await;
            kept.borrow_mut().push(socket); // open, idle, never closed by the client
        }
    });
    // The probe saw the FIN acknowledged: closed well before the 5 s grace.
    assert_eq!(stats.forced, 0, "{stats:?}");
    assert_eq!(stats.closed, 2, "{stats:?}");
    assert!(
        stop_took < StdDuration::from_secs(2),
        "the stop took {stop_took:?}"
    );
    assert_eq!(idle.borrow().len(), 2);
}
