//! The core on smoltcp: a TCP/IP stack on smoltcp's loopback device with the nbecho core
//! serving through `nbecho-smoltcp` and smoltcp clients on the same interface, on a
//! virtual clock. No OS socket anywhere.

use nbecho_core::{Config, Driver, Server, Slot, Stats, Step, Storage, Uppercase};
use nbecho_smoltcp::{core_time, next_wake, SmolStream, Sockets, Timeouts};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant as SmolInstant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

/// The server's port.
pub const PORT: u16 = 7;
/// How long a run may take, in virtual milliseconds.
const LIMIT_MS: u64 = 60_000;
/// Turns of the loop a run may take (many share one instant while packets move).
const MAX_TURNS: u64 = 1_000_000;

/// One smoltcp client.
#[derive(Clone, Debug)]
pub struct SmolClient {
    /// What it sends, then it half-closes.
    pub payload: Vec<u8>,
    /// Resets the connection (smoltcp `abort`) once it has sent this many bytes.
    pub reset_after: Option<usize>,
    /// When it connects.
    pub connect_at_ms: u64,
    /// Never closes its side, even after the server's FIN (it stays until reset).
    pub keep_open: bool,
}

/// What one client saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOutcome {
    /// Every byte it received.
    pub received: Vec<u8>,
    /// The server's FIN arrived (a clean end), as opposed to a reset.
    pub got_fin: bool,
    /// The connection was reset by the server (for example refused at capacity).
    pub was_reset: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct SmolReport {
    /// Per client, in order.
    pub clients: Vec<ClientOutcome>,
    /// The server's counters at the end.
    pub stats: Stats,
    /// Virtual milliseconds taken.
    pub millis: u64,
}

#[derive(Debug, Default)]
struct ClientState {
    connected: bool,
    established: bool,
    sent: usize,
    fin_sent: bool,
    done: bool,
    outcome: ClientOutcome,
}

fn socket<'a>() -> tcp::Socket<'a> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    )
}

/// Serves `clients` with a core of `capacity` connections and `N` listening sockets, until
/// every client is done and the server has closed everything.
pub fn run<const N: usize>(capacity: usize, clients: &[SmolClient]) -> SmolReport {
    run_with::<N>(capacity, clients, Timeouts::default())
}

/// [`run`] with the server's sockets on `timeouts`.
pub fn run_with<const N: usize>(
    capacity: usize,
    clients: &[SmolClient],
    timeouts: Timeouts,
) -> SmolReport {
    let mut device = Loopback::new(Medium::Ip);
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ip),
        &mut device,
        SmolInstant::ZERO,
    );
    iface.update_ip_addrs(|addrs| {
        addrs
            .push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8))
            .unwrap()
    });

    let mut storage: Vec<SocketStorage<'_>> = (0..N + clients.len())
        .map(|_| SocketStorage::EMPTY)
        .collect();
    let mut set = SocketSet::new(&mut storage[..]);
    let server_handles: [SocketHandle; N] = core::array::from_fn(|_| set.add(socket()));
    let client_handles: Vec<SocketHandle> = clients.iter().map(|_| set.add(socket())).collect();
    let mut sockets = Sockets::new(set, server_handles, PORT).with_timeouts(timeouts);

    let mut slots = vec![Slot::EMPTY; capacity];
    let mut arena = vec![0u8; capacity * 1024];
    let storage = Storage::new(&mut slots, &mut arena, 1024).expect("valid sizes");
    let server = Server::new(Config::default(), storage, Uppercase);
    let mut streams: Vec<Option<SmolStream<N>>> = (0..capacity).map(|_| None).collect();
    let mut driver =
        Driver::new(server, sockets.listener(), &mut streams).expect("one stream per slot");

    let mut states: Vec<ClientState> = clients.iter().map(|_| ClientState::default()).collect();
    // The loop of the adapter's docs: poll, service, steps until the core waits, poll,
    // then on to the earlier of the core's timer, the stack's, and the next client's
    // connect (a client that has something to send makes the stack's timer "now").
    let mut now = SmolInstant::ZERO;
    let mut turns = 0u64;
    while now < SmolInstant::from_millis(LIMIT_MS as i64) && turns < MAX_TURNS {
        turns += 1;
        let ms = now.total_millis() as u64;
        iface.poll(now, &mut device, sockets.set_mut());
        sockets.service(now);
        let mut until = None;
        for _ in 0..100_000 {
            match driver.step_with(core_time(now), &mut sockets) {
                Step::Wait(wait) => {
                    until = wait;
                    break;
                }
                Step::Finished => break,
                _ => {}
            }
        }
        iface.poll(now, &mut device, sockets.set_mut());
        let set = sockets.set_mut();
        for ((client, state), &handle) in clients.iter().zip(&mut states).zip(&client_handles) {
            let socket = set.get_mut::<tcp::Socket>(handle);
            if !state.connected {
                if ms >= client.connect_at_ms {
                    let local = 49_152 + handle_index(&client_handles, handle);
                    socket
                        .connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), PORT), local)
                        .unwrap();
                    state.connected = true;
                }
                continue;
            }
            if state.done {
                continue;
            }
            client_step(client, state, socket);
        }
        let server_idle = driver.server().stats().active == 0;
        if server_idle && states.iter().all(|s| s.done) {
            break;
        }
        let connect = clients
            .iter()
            .zip(&states)
            .filter(|(_, s)| !s.connected)
            .map(|(c, _)| SmolInstant::from_millis(c.connect_at_ms as i64))
            .min();
        let wake = [next_wake(until, iface.poll_at(now, sockets.set())), connect]
            .into_iter()
            .flatten()
            .min()
            // Nothing scheduled at all: the clients wait on the server's timers only.
            .unwrap_or(now + Duration::from_millis(1));
        now = wake.max(now);
    }
    SmolReport {
        clients: states.into_iter().map(|s| s.outcome).collect(),
        stats: *driver.server().stats(),
        millis: now.total_millis() as u64,
    }
}

fn handle_index(handles: &[SocketHandle], handle: SocketHandle) -> u16 {
    handles.iter().position(|&h| h == handle).unwrap() as u16
}

fn client_step(client: &SmolClient, state: &mut ClientState, socket: &mut tcp::Socket<'_>) {
    state.established |= socket.may_send() || socket.may_recv();
    let len = client.payload.len();
    let stop = client.reset_after.map_or(len, |k| k.min(len));
    if socket.can_send() && state.sent < stop {
        state.sent += socket
            .send_slice(&client.payload[state.sent..stop])
            .unwrap();
    }
    if client.reset_after.is_some() && state.sent >= stop {
        socket.abort();
        state.done = true;
        return;
    }
    if state.sent == len && !state.fin_sent && socket.may_send() && !client.keep_open {
        socket.close();
        state.fin_sent = true;
    }
    let mut buf = [0; 2048];
    while socket.can_recv() {
        let n = socket.recv_slice(&mut buf).unwrap();
        state.outcome.received.extend_from_slice(&buf[..n]);
    }
    match socket.state() {
        // The server's FIN before ours (it refused us, say): we close in turn.
        tcp::State::CloseWait => {
            state.outcome.got_fin = true;
            if !state.fin_sent && !client.keep_open {
                socket.close();
                state.fin_sent = true;
            }
        }
        tcp::State::LastAck | tcp::State::Closing => state.outcome.got_fin = true,
        // The server's FIN after ours: TIME-WAIT.
        tcp::State::TimeWait => {
            state.outcome.got_fin = true;
            state.done = true;
        }
        // Closed after both FINs (ours last), or reset.
        tcp::State::Closed if state.connected => {
            state.outcome.was_reset = !state.fin_sent;
            state.done = true;
        }
        _ => {}
    }
}
