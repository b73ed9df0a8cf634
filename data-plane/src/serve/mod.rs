//! The accept loop and the serving threads: HTTP/1.1 and h2c on one port, a cap on concurrent
//! connections (excess ones are closed at once, not queued), a header-read timeout against
//! slow clients, HTTP/2 stream limits, and a bounded graceful drain on shutdown.
//!
//! Threading follows Envoy's model: one serving thread per core, each with its own
//! single-threaded runtime, its own connections and its own upstream pool; the accept loop
//! hands each new connection to the next thread in turn. A request then runs start to finish
//! on one thread: no work stealing, no wake-ups across threads, no frees on another thread
//! than the allocation — which the benchmark showed costing more than the request itself.
//!
//! Beside it: [`head_guard`] reads each request head before hyper does, and [`router`] parses
//! the route once and answers health, metrics and every error.

pub mod head_guard;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::gateway::Gateway;
use crate::serve::head_guard::HeadGuard;
use crate::serve::router::route;

pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
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
    let builder = Arc::new(connection_builder(&limits));
    let workers = limits.workers.max(1);
    let mut handoffs = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (sender, receiver) = mpsc::unbounded_channel::<Handoff>();
        let (gateway, builder) = (gateway.clone(), builder.clone());
        let drain_timeout = limits.drain_timeout;
        let head_timeout = limits.header_read_timeout;
        threads.push(
            std::thread::Builder::new()
                .name(format!("sluice-serve-{index}"))
                .spawn(move || {
                    runtime.block_on(serve_handed(
                        receiver,
                        gateway,
                        builder,
                        drain_timeout,
                        head_timeout,
                    ));
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

/// A connection's socket with its slot under the connection cap. Fields drop in order, so the
/// slot is free again before the socket closes: a client that sees its connection end can
/// count on the capacity being back.
struct Slotted {
    _permit: OwnedSemaphorePermit,
    stream: tokio::net::TcpStream,
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

fn connection_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// One serving thread: serves the connections handed to it until the hand-off closes, then
/// stops taking requests on them and lets the ones under way finish (and record their usage),
/// within `drain_timeout`.
async fn serve_handed(
    mut handed: mpsc::UnboundedReceiver<Handoff>,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain_timeout: Duration,
    head_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    while let Some((stream, permit)) = handed.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot serve an accepted connection");
                continue;
            }
        };
        let gateway = gateway.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(route(gateway, request).await) }
            });
            // Heads hyper would refuse with a bare 400 are refused by the router instead.
            let socket = HeadGuard::new(
                Slotted {
                    _permit: permit,
                    stream,
                },
                head_timeout,
            );
            let connection = builder.serve_connection(TokioIo::new(socket), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?drain_timeout, "connections still open after the drain timeout; closing them");
    }
}
