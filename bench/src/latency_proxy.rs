//! A TCP proxy on loopback that answers late: a local server (Azurite) behind it answers like one
//! in a cloud region, and the benchmark's clients reach it over their real path (HTTP client,
//! connection pool, TCP), not through a wrapper around the store.
//!
//! What it models: the round trip of a request on an open connection. Bytes from the client go
//! upstream at once; every chunk read from the upstream is held until the latency has passed
//! since it was read, then written to the client, in the order read. For a request/response
//! protocol such as HTTP/1.1 each response thus arrives one latency after the server sent it,
//! the whole round trip charged to the return leg. Chunks wait from their own arrival, not behind
//! each other, so a connection's throughput is not capped beyond the latency (up to
//! [`IN_FLIGHT_CHUNKS`] chunks of [`CHUNK_BYTES`] held per connection: 1.6 GB/s at 10 ms).
//!
//! What it does not model: connection set-up (the client's handshake is with the proxy on
//! loopback, and the proxy connects upstream without delay, so a client that opens a connection
//! per request pays no extra round trip for it), TLS, bandwidth, TCP slow start, jitter and loss.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The most bytes read from the upstream in one go: one held chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The most chunks held per connection; the upstream is read no further until the oldest is
/// delivered.
pub const IN_FLIGHT_CHUNKS: usize = 256;

/// A running proxy: connections to [`LatencyProxy::address`] are relayed to the upstream, its
/// answers delayed by [`LatencyProxy::latency`]. Dropping it stops the proxy and closes the
/// connections it relays.
#[derive(Debug)]
pub struct LatencyProxy {
    address: SocketAddr,
    latency: Duration,
    connections: Arc<AtomicU64>,
    _stop_on_drop: DropGuard,
}

impl LatencyProxy {
    /// Listens on a free port of 127.0.0.1 and relays every connection to `upstream`, holding
    /// what the upstream sends for `latency`.
    pub async fn start(upstream: SocketAddr, latency: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let stop = CancellationToken::new();
        let connections = Arc::new(AtomicU64::new(0));
        tokio::spawn(accept_connections(listener, upstream, latency, stop.clone(), Arc::clone(&connections)));
        Ok(Self {
            address,
            latency,
            connections,
            _stop_on_drop: stop.drop_guard(),
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How long each chunk from the upstream is held.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// How many client connections the proxy has accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Accepts clients until `stop` is cancelled, relaying each in its own task (which also ends on
/// `stop`).
async fn accept_connections(listener: TcpListener, upstream: SocketAddr, latency: Duration, stop: CancellationToken, connections: Arc<AtomicU64>) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of file descriptors, or a client gone before it was accepted: wait a little
                // rather than spin on an error that repeats.
                eprintln!("latency proxy: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let stop = stop.clone();
        tokio::spawn(async move {
            let relayed = async {
                let server = match TcpStream::connect(upstream).await {
                    Ok(server) => server,
                    Err(error) => {
                        // The client sees its connection closed, and fails as it would on a
                        // refused connection.
                        eprintln!("latency proxy: cannot connect to {upstream}: {error}");
                        return;
                    }
                };
                // A relay ends in an error when either side resets its connection, which the
                // other side then sees as it would without the proxy.
                let _ = relay(client, server, latency).await;
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = relayed => {}
            }
        });
    }
}

/// Relays between `client` and `server` until both directions are closed: the client's bytes at
/// once, the server's `latency` late.
async fn relay(client: TcpStream, server: TcpStream, latency: Duration) -> std::io::Result<()> {
    // Small requests and answers go out as soon as they are written, as an HTTP client's do.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = async {
        tokio::io::copy(&mut from_client, &mut to_server).await?;
        to_server.shutdown().await
    };
    tokio::try_join!(requests, forward_late(&mut from_server, &mut to_client, latency))?;
    Ok(())
}

/// Copies `from` to `to`, writing each chunk `latency` after it was read, then closes `to` for
/// writing. Reading goes on while earlier chunks wait, so chunks read close together are written
/// close together.
async fn forward_late(from: &mut (impl AsyncRead + Unpin + Send), to: &mut (impl AsyncWrite + Unpin + Send), latency: Duration) -> std::io::Result<()> {
    let (hold, mut held) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let read = async move {
        let mut buffer = vec![0; CHUNK_BYTES];
        loop {
            let read = from.read(&mut buffer).await?;
            if read == 0 {
                // Dropping `hold` lets the writer finish once the last chunk is delivered.
                return Ok(());
            }
            let due = tokio::time::Instant::now() + latency;
            if hold.send((due, buffer[..read].to_vec())).await.is_err() {
                // The writer has stopped on an error, which `try_join!` reports.
                return Ok(());
            }
        }
    };
    let write = async {
        while let Some((due, chunk)) = held.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that sends back every byte it receives and closes its side once the client
    /// has closed its own.
    async fn echo_server() -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut received, mut sent) = stream.split();
                    let _ = tokio::io::copy(&mut received, &mut sent).await;
                });
            }
        });
        Ok(address)
    }

    #[tokio::test]
    async fn bytes_come_back_unchanged_in_order_and_no_sooner_than_the_latency() -> std::io::Result<()> {
        let latency = Duration::from_millis(50);
        let proxy = LatencyProxy::start(echo_server().await?, latency).await?;
        let mut client = TcpStream::connect(proxy.address()).await?;

        let started = std::time::Instant::now();
        client.write_all(b"ping").await?;
        let mut answer = [0; 4];
        client.read_exact(&mut answer).await?;
        let round_trip = started.elapsed();
        assert_eq!(&answer, b"ping");
        assert!(round_trip >= latency, "a round trip took {round_trip:?}, less than the added {latency:?}");

        // More than a few chunks, written in many pieces without waiting for answers; a pattern
        // whose period (251) divides no piece or chunk size, so reordering would show.
        let payload: Vec<u8> = (0..3 * CHUNK_BYTES + 12_345).map(|i| (i % 251) as u8).collect();
        let (mut receiving, mut sending) = client.split();
        let send = async {
            for piece in payload.chunks(1000) {
                sending.write_all(piece).await?;
            }
            // The echo closes once it sees the end, and the proxy passes the close on, which
            // ends `read_to_end` below.
            sending.shutdown().await
        };
        let receive = async {
            let mut received = Vec::new();
            receiving.read_to_end(&mut received).await.map(|_| received)
        };
        let ((), received) = tokio::try_join!(send, receive)?;
        assert_eq!(received.len(), payload.len());
        assert!(received == payload, "the bytes came back changed or out of order");
        assert_eq!(proxy.connections(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() -> std::io::Result<()> {
        let proxy = LatencyProxy::start(echo_server().await?, Duration::from_millis(1)).await?;
        let mut client = TcpStream::connect(proxy.address()).await?;
        // One round trip, so the connection is being relayed when the proxy is dropped.
        client.write_all(b"x").await?;
        let mut answer = [0; 1];
        client.read_exact(&mut answer).await?;
        drop(proxy);
        let after_drop = client.read(&mut answer).await;
        assert!(matches!(after_drop, Ok(0) | Err(_)), "the connection is still open: {after_drop:?}");
        Ok(())
    }
}
