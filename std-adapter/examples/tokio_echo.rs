//! The nbecho core inside one tokio task, driven by readiness: `cargo run -p nbecho-std
//! --features tokio --example tokio_echo` serves on 127.0.0.1:8089 until Ctrl-C.
//!
//! Compare tokio's own echo example: the core decides every operation, and
//! [`nbecho_std::tokio::serve`] performs them, turning tokio's readiness into the core's.
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use nbecho_core::Uppercase;
use nbecho_std::tokio::{serve, Options};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:8089").await?;
    println!("tokio_echo: listening on {}", listener.local_addr()?);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let stats = serve(listener, &Options::default(), Uppercase, ctrl_c).await?;
    println!("tokio_echo: stopped: {stats}");
    Ok(())
}
