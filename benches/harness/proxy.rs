//! A distant broker on one machine: a TCP proxy that delays every byte by half the chosen round
//! trip in each direction (`--rtt-ms`).
//!
//! ```text
//!   client ──► 127.0.0.1:proxy ──(hold rtt/2)──► broker 127.0.0.1:port
//!   client ◄── (hold rtt/2) ◄────────────────────┘
//! ```
//!
//! The broker advertises the proxy's address, so every connection after the bootstrap goes
//! through it too: contenders, the harness's load producer and reader, and the broker's own
//! inter-broker requests (the transaction coordinator's WriteTxnMarkers to the partition
//! leader, itself). `tc netem` would do the same in the kernel, but this machine's kernel has no
//! `sch_netem` and no modules to load, so the delay is done here.
//!
//! Each direction of a connection is a reader task that stamps every chunk it reads with the
//! time it may leave, and a writer task that sleeps until then and writes it: a delay line, not
//! a stop-and-wait relay, so throughput is not capped at one chunk per round trip, and the
//! order of bytes is kept.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running proxy; dropping it stops it (its runtime shuts down).
pub struct Proxy {
    /// Where clients connect: `127.0.0.1:PORT`.
    pub address: String,
    _runtime: tokio::runtime::Runtime,
}

/// A proxy for the broker the harness starts on `port`, on `port + 10`, adding `rtt_ms` of
/// round trip; adds to `broker_props` the advertised listener that sends clients through it.
pub fn in_front_of(port: u16, rtt_ms: f64, broker_props: &mut Vec<String>) -> Result<Proxy> {
    let proxy_port = port + 10;
    broker_props.push(format!(
        "advertised.listeners=PLAINTEXT://127.0.0.1:{proxy_port},CONTROLLER://127.0.0.1:{}",
        port + 1
    ));
    eprintln!("harness: a proxy on 127.0.0.1:{proxy_port} adds {rtt_ms} ms of round trip");
    start(
        proxy_port,
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs_f64(rtt_ms / 2000.0),
    )
}

/// Listens on `127.0.0.1:listen` and relays to `upstream`, each direction held `one_way`.
pub fn start(listen: u16, upstream: SocketAddr, one_way: Duration) -> Result<Proxy> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("harness-proxy")
        .enable_all()
        .build()
        .context("starting the proxy's runtime")?;
    let listener = runtime
        .block_on(TcpListener::bind(("127.0.0.1", listen)))
        .with_context(|| format!("binding the proxy to 127.0.0.1:{listen}"))?;
    runtime.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    tokio::spawn(relay(client, upstream, one_way));
                }
                Err(error) => eprintln!("harness: proxy: accept failed: {error}"),
            }
        }
    });
    Ok(Proxy {
        address: format!("127.0.0.1:{listen}"),
        _runtime: runtime,
    })
}

async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        // The broker is not up yet: the client sees a closed connection and retries.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        delay_line(client_read, server_write, one_way),
        delay_line(server_read, client_write, one_way),
    );
}

/// Copies `from` to `to`, every chunk `delay` late; ends when either side closes.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping `chunks` lets the writer finish what is queued, then stop.
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
