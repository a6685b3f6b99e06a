//! The two system calls std and its ecosystem have no safe wrapper for, each in one
//! audited `unsafe` block: the only `unsafe` in nbecho.

use std::io;

/// `SIOCOUTQ` (`tcp(7)`): the bytes in the socket's send queue not yet acknowledged by the
/// peer, which counts a FIN as one. Neither std, socket2, mio nor rustix has a safe call
/// for it, hence this one audited `ioctl`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn unacked_bytes(socket: &(impl std::os::fd::AsFd + ?Sized)) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut unacked: libc::c_int = 0;
    // SAFETY: `SIOCOUTQ` (the same number as `TIOCOUTQ` on Linux) writes one `int`
    // through its argument, which points to a live, aligned `c_int` of ours; the
    // descriptor is borrowed from an open socket for the whole call. On a descriptor that
    // is not a socket the kernel answers an error and writes nothing.
    let rc = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut unacked) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(unacked).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn unacked_bytes(_: &(impl std::os::fd::AsFd + ?Sized)) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `CLOCK_MONOTONIC` (the clock `std::time::Instant` reads on Linux) in microseconds,
/// read straight from the vDSO: `Instant::now` plus `elapsed` costs about three times as
/// many instructions, and the server reads the clock once per wake-up.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn monotonic_micros() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through its pointer, which points to
    // a live, aligned `timespec` of ours; `CLOCK_MONOTONIC` always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    debug_assert_eq!(rc, 0);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn monotonic_micros() -> u64 {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let elapsed = ORIGIN.get_or_init(std::time::Instant::now).elapsed();
    elapsed.as_secs() * 1_000_000 + u64::from(elapsed.subsec_micros())
}
