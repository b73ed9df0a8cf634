//! The accept loop and the serving threads: HTTP/1.1 ([`http1`], served by hand) and h2c
//! ([`http2`], by hyper) on one port, a cap on concurrent connections (excess ones are closed
//! at once, not queued), head and idle timeouts against slow clients, HTTP/2 stream limits,
//! and a bounded graceful drain on shutdown.
//!
//! Threading follows Envoy's model: one serving thread per core, each with its own
//! single-threaded runtime, its own connections and its own upstream pool; the accept loop
//! hands each new connection to the next thread in turn. A request then runs start to finish
//! on one thread: no work stealing, no wake-ups across threads, no frees on another thread
//! than the allocation — which the benchmark showed costing more than the request itself.
//!
//! Beside it: [`router`] parses the route once and answers health, metrics and every error.

pub mod http1;
pub mod http2;
pub mod router;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::gateway::Gateway;
use crate::serve::http1::Timeouts;

pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for open connections to finish their requests.
    pub drain_timeout: Duration,
    /// Serving threads (at least one).
    pub workers: usize,
}

type Handoff = (std::net::TcpStream, OwnedSemaphorePermit);

/// Accepts connections until `shutdown` resolves, then lets every serving thread drain its
/// connections (within `limits.drain_timeout`) and returns once all of them have stopped.
/// Fails before serving anything if a serving thread cannot start.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let timeouts = Timeouts {
        head: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    let workers = limits.workers.max(1);
    let mut handoffs = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        // Sockets and timers only: with signals and processes enabled too, every turn of a
        // serving thread's driver also polled the signal driver and tried to reap orphaned
        // child processes (both on the profile of a stream), work only `main` needs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (sender, receiver) = mpsc::unbounded_channel::<Handoff>();
        let gateway = gateway.clone();
        let drain_timeout = limits.drain_timeout;
        threads.push(
            std::thread::Builder::new()
                .name(format!("sluice-serve-{index}"))
                .spawn(move || {
                    runtime.block_on(serve_handed(receiver, gateway, timeouts, drain_timeout));
                })?,
        );
        handoffs.push(sender);
    }
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut next = 0_usize;
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The connection moves to the serving thread's own reactor.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        // A thread that stopped drops its receiver; the connection goes to the next one.
        let mut handoff = (stream, permit);
        for _ in 0..handoffs.len() {
            next = (next + 1) % handoffs.len();
            match handoffs[next].send(handoff) {
                Ok(()) => break,
                Err(mpsc::error::SendError(returned)) => handoff = returned,
            }
        }
    }
    // Closing the hand-offs tells each serving thread to stop taking connections and drain.
    tracing::info!("draining connections");
    drop(handoffs);
    let joined = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    });
    let _ = joined.await;
    Ok(())
}

/// One serving thread: serves the connections handed to it until the hand-off closes, then
/// stops taking requests on them and lets the ones under way finish (and record their usage),
/// within `drain_timeout`.
async fn serve_handed(
    mut handed: mpsc::UnboundedReceiver<Handoff>,
    gateway: Arc<Gateway>,
    timeouts: Timeouts,
    drain_timeout: Duration,
) {
    let h2 = Arc::new(http2::builder());
    // Every connection holds a receiver: the sender sees them all gone once they have ended.
    let (drain, draining) = watch::channel(false);
    while let Some((stream, permit)) = handed.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot serve an accepted connection");
                continue;
            }
        };
        let (gateway, h2, draining) = (gateway.clone(), h2.clone(), draining.clone());
        tokio::spawn(async move {
            let served =
                http1::serve(stream, permit, gateway.clone(), timeouts, draining.clone()).await;
            if let Some(start) = served {
                http2::serve(start, gateway, &h2, draining).await;
            }
        });
    }
    drop(draining);
    let _ = drain.send(true);
    if tokio::time::timeout(drain_timeout, drain.closed())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?drain_timeout, "connections still open after the drain timeout; closing them");
    }
}
