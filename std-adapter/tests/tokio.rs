//! The tokio example over loopback: concurrent clients get exact echoes; a graceful stop
//! returns balanced stats.
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

#[path = "../examples/tokio_echo.rs"]
mod example;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "current_thread")]
async fn the_core_in_a_tokio_task_echoes_exactly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(example::serve(listener, 8, async {
        let _ = stop_rx.await;
    }));

    let clients: Vec<_> = (0..6u8)
        .map(|i| {
            tokio::spawn(async move {
                let data: Vec<u8> = (0..200_000u32 + u32::from(i) * 999)
                    .map(|j| (j * 7 + u32::from(i)) as u8)
                    .collect();
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut rd, mut wr) = stream.into_split();
                let expected = data.to_ascii_uppercase();
                let writer = tokio::spawn(async move {
                    wr.write_all(&data).await.unwrap();
                    wr.shutdown().await.unwrap();
                });
                let mut reply = Vec::new();
                rd.read_to_end(&mut reply).await.unwrap();
                writer.await.unwrap();
                assert!(
                    reply == expected,
                    "client {i}: {} of {} bytes",
                    reply.len(),
                    expected.len()
                );
                expected.len() as u64
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += tokio::time::timeout(std::time::Duration::from_secs(20), c)
            .await
            .unwrap()
            .unwrap();
    }
    stop_tx.send(()).unwrap();
    let stats = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stats.accepted, stats.closed, stats.failed, stats.forced),
        (6, 6, 0, 0)
    );
    assert_eq!((stats.bytes_in, stats.bytes_out), (total, total));
}
