//! The gRPC listener: plain TCP, or TLS whose certificates rotate from files. Handshakes run
//! beside the accept loop, so a slow or hostile client never holds up the next one, and a
//! refused handshake is logged with the peer and the reason.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_shared::tls::accepted::Accepted;
use sluice_shared::tls::server::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Connections ready for the server, TLS already negotiated. The accept loop ends when the
/// stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> ReceiverStream<io::Result<Accepted>> {
    let (ready, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, most likely: pause rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = ready.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                if ready.send(Ok(Accepted::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let ready = ready.clone();
            tokio::spawn(async move {
                match tls.accept(tcp).await {
                    Ok(stream) => {
                        let _ = ready.send(Ok(Accepted::Tls(Box::new(stream)))).await;
                    }
                    Err(reason) => log_refused(peer, &reason),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

fn log_refused(peer: SocketAddr, reason: &str) {
    tracing::warn!(%peer, reason, "TLS handshake refused");
}
