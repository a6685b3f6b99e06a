//! Command-line values, parsed the same way by every subcommand: addresses (`8088`,
//! `:8088`, `host:8088`), durations (`1.5`, `90s`, `500ms`, `5m`) and sizes (`4096`,
//! `64K`, `1MiB`).

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// An address: `PORT` or `:PORT` (on 127.0.0.1: nbecho stays on loopback unless told
/// otherwise), or `HOST:PORT`, resolved (the first address is used), or `[IPv6]:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let port = s.strip_prefix(':').unwrap_or(s);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port} is not a port (0 to 65535)"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("not an address (PORT, :PORT or HOST:PORT): {e}"))?
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

/// A duration: a number, fractions allowed, in seconds or with a unit `ms`, `s`, `m` or
/// `h` (`1.5`, `90s`, `500ms`, `5m`). At most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (for example 1.5, 90s, 500ms, 5m)"))?;
    let secs = value * scale;
    if !(secs.is_finite() && (0.0..=365.0 * 86_400.0).contains(&secs)) {
        return Err(format!("{s} is not between 0 and a year"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration that is not zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// A size in bytes: a whole number with an optional suffix, `K`, `M` or `G` (powers of
/// 1024, also written `KB`, `KiB`, ...; case does not matter) or `B`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size suffix {other:?} (use K, M or G)")),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("not a size: {s:?} (for example 4096, 64K, 1MiB)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s} is too large"))
}

/// A size within `min..=max` bytes.
pub fn parse_size_in(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let size = parse_size(s)?;
    if (min..=max).contains(&size) {
        Ok(size)
    } else {
        Err(format!("{size} bytes is not between {min} and {max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert_eq!(parse_addr("8089"), Ok(local(8089)));
        assert_eq!(parse_addr(":8089"), Ok(local(8089)));
        assert_eq!(parse_addr("127.0.0.1:8089"), Ok(local(8089)));
        assert_eq!(parse_addr("0.0.0.0:80"), Ok("0.0.0.0:80".parse().unwrap()));
        assert_eq!(parse_addr("[::1]:7"), Ok("[::1]:7".parse().unwrap()));
        assert!(parse_addr("70000").is_err());
        assert!(parse_addr(":").is_err());
        assert!(parse_addr("not-an-address").is_err());
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1.5"), Ok(ms(1500)));
        assert_eq!(parse_duration("90s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "-1", "1.5x", "abc", "1e3", "400d", "99999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0").is_err());
        assert_eq!(parse_positive_duration("0.5"), Ok(ms(500)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("64kib"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("16B"), Ok(16));
        for bad in ["", "1.5K", "-1", "64Q", "K"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size_in("64K", 16, 1 << 24), Ok(65_536));
        assert!(parse_size_in("8", 16, 1 << 24).is_err());
        assert!(parse_size_in("32M", 16, 1 << 24).is_err());
    }
}
