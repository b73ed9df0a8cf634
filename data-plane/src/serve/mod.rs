//! The accept loop and the serving threads: HTTP/1.1 ([`http1`], served by hand) and h2c
//! ([`http2`], by hyper) on one port, or both over TLS (by ALPN; the handshake runs on the
//! serving thread), a cap on concurrent connections ([`admission`]; when it
//! is reached, the connection that has waited longest for a request is closed to make room
//! ([`idle`]), and a newcomer is refused only when none waits), an optional cap per client
//! address, timeouts for a connection's first request, its heads, its bodies and the idle
//! time between requests, HTTP/2 stream limits, and a bounded graceful drain on shutdown.
//!
//! Threading follows Envoy's model: one serving thread per core, each with its own
//! single-threaded runtime, its own connections and its own upstream pool; the accept loop
//! hands each new connection to the next thread in turn. A request then runs start to finish
//! on one thread: no work stealing, no wake-ups across threads, no frees on another thread
//! than the allocation — which the benchmark showed costing more than the request itself.
//!
//! Beside it: [`router`] parses the route once and answers health, metrics and every error.

pub mod admission;
pub mod http1;
pub mod http2;
pub mod idle;
pub mod open_files;
pub mod router;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_shared::tls::accepted::Accepted;
use sluice_shared::tls::server::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use crate::gateway::Gateway;
use crate::serve::admission::{Admission, ClientShare, ConnectionSlot};
use crate::serve::http1::Timeouts;
use crate::serve::idle::IdleConnections;

pub struct ServerLimits {
    pub max_connections: usize,
    /// Open connections one client address may hold (0: no limit).
    pub max_connections_per_client: usize,
    /// How long a new connection may wait before its first request begins.
    pub first_request_timeout: Duration,
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long a request body may stop arriving.
    pub body_stall_timeout: Duration,
    /// How long a shutdown waits for open connections to finish their requests.
    pub drain_timeout: Duration,
    /// Serving threads (at least one).
    pub workers: usize,
}

/// How long a connection admitted over the cap waits for the slot its serving thread freed
/// by shedding a waiting connection.
const SHED_WAIT: Duration = Duration::from_secs(1);

/// A connection on its way to a serving thread: with its slot under the cap, or without one
/// when the proxy was full and the thread is to make room for it.
struct Handoff {
    stream: std::net::TcpStream,
    slot: Option<OwnedSemaphorePermit>,
    client: Option<ClientShare>,
}

/// A serving thread as the accept loop sees it.
struct ServingThread {
    handoff: mpsc::UnboundedSender<Handoff>,
    /// How many of its connections wait for a request (and could be shed).
    waiting: Arc<AtomicUsize>,
}

/// Accepts connections until `shutdown` resolves, then lets every serving thread drain its
/// connections (within `limits.drain_timeout`) and returns once all of them have stopped.
/// Fails before serving anything if a serving thread cannot start.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    gateway: Arc<Gateway>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let timeouts = Timeouts {
        first_request: limits.first_request_timeout,
        head: limits.header_read_timeout,
        idle: limits.idle_timeout,
        body_stall: limits.body_stall_timeout,
    };
    let admission = Arc::new(Admission::new(
        limits.max_connections,
        limits.max_connections_per_client,
    ));
    let workers = limits.workers.max(1);
    let mut serving = Vec::with_capacity(workers);
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
        let waiting = Arc::new(AtomicUsize::new(0));
        let thread = Thread {
            gateway: gateway.clone(),
            tls: tls.clone(),
            admission: admission.clone(),
            idle: Arc::new(IdleConnections::new(waiting.clone())),
            timeouts,
            drain_timeout: limits.drain_timeout,
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("sluice-serve-{index}"))
                .spawn(move || runtime.block_on(thread.serve_handed(receiver)))?,
        );
        serving.push(ServingThread {
            handoff: sender,
            waiting,
        });
    }
    let mut next = 0_usize;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
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
        let Ok(client) = admission.client_share(peer.ip()) else {
            gateway
                .metrics
                .connections_refused_per_client_total
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let slot = admission.try_slot();
        let target = if slot.is_some() {
            next = (next + 1) % serving.len();
            next
        } else {
            // Full: the thread with the most connections waiting for a request makes room.
            match most_waiting(&serving) {
                Some(target) => target,
                None => {
                    gateway
                        .metrics
                        .connections_refused_full_total
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // The connection moves to the serving thread's own reactor.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        // A thread that stopped drops its receiver; the connection goes to the next one.
        let mut handoff = Handoff {
            stream,
            slot,
            client,
        };
        let mut target = target;
        for _ in 0..serving.len() {
            match serving[target].handoff.send(handoff) {
                Ok(()) => break,
                Err(mpsc::error::SendError(returned)) => handoff = returned,
            }
            target = (target + 1) % serving.len();
        }
    }
    // Closing the hand-offs tells each serving thread to stop taking connections and drain.
    tracing::info!("draining connections");
    drop(serving);
    let joined = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    });
    let _ = joined.await;
    Ok(())
}

/// The serving thread with the most connections waiting for a request, if any has one.
fn most_waiting(serving: &[ServingThread]) -> Option<usize> {
    serving
        .iter()
        .enumerate()
        .map(|(index, thread)| (thread.waiting.load(Ordering::Relaxed), index))
        .filter(|(waiting, _)| *waiting > 0)
        .max()
        .map(|(_, index)| index)
}

/// What one serving thread works with.
struct Thread {
    gateway: Arc<Gateway>,
    /// TLS on the client listener, negotiated on the serving thread that then serves the
    /// connection.
    tls: Option<Arc<ServerTls>>,
    admission: Arc<Admission>,
    idle: Arc<IdleConnections>,
    timeouts: Timeouts,
    drain_timeout: Duration,
}

impl Thread {
    /// Serves the connections handed to it until the hand-off closes, then stops taking
    /// requests on them and lets the ones under way finish (and record their usage), within
    /// the drain timeout.
    async fn serve_handed(self, mut handed: mpsc::UnboundedReceiver<Handoff>) {
        let h2 = Arc::new(http2::builder());
        // Every connection holds a receiver: the sender sees them all gone once they have ended.
        let (drain, draining) = watch::channel(false);
        while let Some(handoff) = handed.recv().await {
            let Handoff {
                stream,
                slot,
                client,
            } = handoff;
            if slot.is_none() && !self.idle.shed_longest_waiting() {
                // What the accept loop counted has gone meanwhile: nothing to give up.
                self.gateway
                    .metrics
                    .connections_refused_full_total
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if slot.is_none() {
                self.gateway
                    .metrics
                    .connections_shed_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot serve an accepted connection");
                    continue;
                }
            };
            let (gateway, h2, draining) = (self.gateway.clone(), h2.clone(), draining.clone());
            let tls = self.tls.clone();
            let (admission, idle, timeouts) =
                (self.admission.clone(), self.idle.clone(), self.timeouts);
            tokio::spawn(async move {
                let slot = match slot {
                    Some(slot) => slot,
                    // The shed connection frees its slot as it closes.
                    None => match tokio::time::timeout(SHED_WAIT, admission.slot()).await {
                        Ok(Some(slot)) => slot,
                        _ => return,
                    },
                };
                let slot = ConnectionSlot::new(slot, client);
                let stream = match tls {
                    None => Accepted::Plain(stream),
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => Accepted::Tls(Box::new(stream)),
                        Err(reason) => {
                            tracing::debug!(reason, "a client's TLS handshake failed");
                            gateway
                                .metrics
                                .tls_handshakes_failed_total
                                .fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                };
                let served = http1::serve(
                    stream,
                    slot,
                    gateway.clone(),
                    timeouts,
                    draining.clone(),
                    idle,
                )
                .await;
                if let Some(start) = served {
                    http2::serve(start, gateway, &h2, draining).await;
                }
            });
        }
        drop(draining);
        let _ = drain.send(true);
        if tokio::time::timeout(self.drain_timeout, drain.closed())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.drain_timeout, "connections still open after the drain timeout; closing them");
        }
    }
}
