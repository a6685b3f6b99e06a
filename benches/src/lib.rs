//! Peers for `benches/compare.sh`: the same uppercase echo written directly on mio (the
//! reference a readiness-driven nbecho is measured against) and idiomatically on tokio.
//! Each binary takes the address to listen on and prints `listening on ADDR`.
