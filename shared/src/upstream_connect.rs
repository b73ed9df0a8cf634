//! The one way either half opens a TCP connection to an upstream. A provider's URL names a
//! host; what decides where its key goes is the address that host *resolves to at the moment
//! of connecting*, so every address — a literal, or each one a resolver returns, every time,
//! which also defeats DNS rebinding — is judged by [`network_reach`](crate::network_reach)
//! against the provider's private-network permission before a socket is opened to it.
//! Numeric host forms (`2130706433`, `0x7f.1`, `127.1`) are read as the addresses they are.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::network_reach::{self, Reach};

/// Turns a host name into addresses. The system's resolver in production; tests give their own
/// answers (a name that resolves to loopback, link-local, metadata).
pub trait Resolve: Send + Sync + 'static {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
}

/// `getaddrinfo`, on the runtime's blocking pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the URL names no host")]
    NoHost,
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    /// Every address was refused: where the key would have gone is not allowed.
    #[error(
        "{host} is {} ({via}), which this provider may not reach{}",
        .reach.describe(),
        if *.reach == Reach::Private { ": allow it with allow_private_network" } else { "" }
    )]
    Refused {
        host: String,
        /// The address judged, or how the host was judged without one.
        via: String,
        reach: Reach,
    },
    #[error("connecting to {address} timed out after {after:?}")]
    Timeout {
        address: SocketAddr,
        after: Duration,
    },
    #[error("connecting to {address}: {source}")]
    Io {
        address: SocketAddr,
        source: io::Error,
    },
}

/// An error and its causes, `: `-joined, so an operator reads why a connection failed (a
/// refused address says which). hyper's errors hold no URL query strings or credentials.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where a host is to be looked for: an address it spells, or a name to resolve.
enum Target {
    Address(IpAddr),
    Name(String),
}

/// The host of a URL as the address it spells, read the way browsers and `inet_aton` read
/// IPv4 numbers (decimal, octal, hex, short forms), or as a name.
fn target(host: &str) -> Result<Target, ConnectError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Target::Address(ip));
    }
    match url::Host::parse(bare) {
        Ok(url::Host::Ipv4(ip)) => Ok(Target::Address(IpAddr::V4(ip))),
        Ok(url::Host::Ipv6(ip)) => Ok(Target::Address(IpAddr::V6(ip))),
        Ok(url::Host::Domain(name)) => Ok(Target::Name(name)),
        Err(_) => Err(ConnectError::NoHost),
    }
}

/// The addresses `host` reaches, each judged: the permitted ones in the resolver's order, or
/// the reason none is.
pub async fn permitted_addresses(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    allow_private_network: bool,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let addresses = match target(host)? {
        Target::Address(ip) => vec![SocketAddr::new(ip, port)],
        Target::Name(name) => {
            if let Some(reach) =
                network_reach::of_name(&name).filter(|r| !r.permitted(allow_private_network))
            {
                return Err(ConnectError::Refused {
                    host: host.to_owned(),
                    via: "by its name".to_owned(),
                    reach,
                });
            }
            resolver
                .resolve(name, port)
                .await
                .map_err(|source| ConnectError::Resolve {
                    host: host.to_owned(),
                    source,
                })?
        }
    };
    let mut refused = None;
    let permitted: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|address| {
            let reach = network_reach::of_ip(address.ip());
            let ok = reach.permitted(allow_private_network);
            if !ok && refused.is_none_or(|(_, worst)| reach > worst) {
                refused = Some((address.ip(), reach));
            }
            ok
        })
        .collect();
    match (permitted.is_empty(), refused) {
        (false, _) => Ok(permitted),
        (true, Some((address, reach))) => Err(ConnectError::Refused {
            host: host.to_owned(),
            via: address.to_string(),
            reach,
        }),
        (true, None) => Err(ConnectError::NoAddress {
            host: host.to_owned(),
        }),
    }
}

/// A hyper connector (a `tower` service from `Uri` to a TCP stream) that connects only where
/// [`permitted_addresses`] allows. Wrap it in `hyper_rustls::HttpsConnector` for TLS.
#[derive(Clone)]
pub struct GuardedConnector {
    resolver: Arc<dyn Resolve>,
    allow_private_network: bool,
    connect_timeout: Duration,
}

impl GuardedConnector {
    pub fn new(
        resolver: Arc<dyn Resolve>,
        allow_private_network: bool,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            resolver,
            allow_private_network,
            connect_timeout,
        }
    }

    async fn connect(self, uri: Uri) -> Result<TokioIo<TcpStream>, ConnectError> {
        let host = uri.host().ok_or(ConnectError::NoHost)?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let addresses =
            permitted_addresses(&*self.resolver, host, port, self.allow_private_network).await?;
        let mut last = None;
        for address in addresses {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(source)) => last = Some(ConnectError::Io { address, source }),
                Err(_) => {
                    last = Some(ConnectError::Timeout {
                        address,
                        after: self.connect_timeout,
                    });
                }
            }
        }
        Err(last.unwrap_or(ConnectError::NoAddress {
            host: host.to_owned(),
        }))
    }
}

impl std::fmt::Debug for GuardedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedConnector")
            .field("allow_private_network", &self.allow_private_network)
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower_service::Service;

    use super::*;

    /// Answers names from a table, as a hostile DNS server (or `/etc/hosts`) might.
    struct TableResolver(HashMap<&'static str, Vec<IpAddr>>);

    impl Resolve for TableResolver {
        fn resolve(
            &self,
            host: String,
            port: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
            let found = self.0.get(host.as_str()).map(|ips| {
                ips.iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect::<Vec<_>>()
            });
            Box::pin(async move {
                found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
            })
        }
    }

    fn resolver() -> Arc<dyn Resolve> {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        Arc::new(TableResolver(HashMap::from([
            ("vm", vec![ip("127.0.0.1")]),
            ("127.0.0.1.nip.io", vec![ip("127.0.0.1")]),
            ("169.254.169.254.nip.io", vec![ip("169.254.169.254")]),
            ("rebound.example", vec![ip("::1"), ip("127.0.0.1")]),
            ("oracle.example", vec![ip("192.0.0.192")]),
            ("alibaba.example", vec![ip("100.100.100.200")]),
            ("aws6.example", vec![ip("fd00:ec2::254")]),
            ("mapped.example", vec![ip("::ffff:127.0.0.1")]),
            ("anywhere.example", vec![ip("0.0.0.0")]),
        ])))
    }

    /// A listener on loopback that counts the connections it receives.
    async fn listener() -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counting = accepted.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counting.fetch_add(1, Ordering::SeqCst);
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn no_form_or_name_reaches_loopback_link_local_or_metadata_without_leave() {
        let (port, accepted) = listener().await;
        let hosts = [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0x7f.1",
            "0177.0.0.1",
            "0.0.0.0",
            "0",
            "[::]",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::127.0.0.1]",
            "[::7f00:1]",
            "[64:ff9b::7f00:1]",
            "[64:ff9b::a9fe:a9fe]",
            "[2002:a9fe:a9fe::]",
            "[2002:7f00:1::]",
            "169.254.169.254",
            "[fd00:ec2::254]",
            "192.0.0.192",
            "100.100.100.200",
            "localhost",
            "localhost.localdomain",
            "ip6-localhost",
            "vm",
            "127.0.0.1.nip.io",
            "169.254.169.254.nip.io",
            "rebound.example",
            "oracle.example",
            "alibaba.example",
            "aws6.example",
            "mapped.example",
            "anywhere.example",
        ];
        for host in hosts {
            let mut connector = GuardedConnector::new(resolver(), false, Duration::from_secs(2));
            let uri: Uri = format!("http://{host}:{port}/v1").parse().unwrap();
            let refused = connector.call(uri).await;
            assert!(
                matches!(refused, Err(ConnectError::Refused { .. })),
                "{host}: {refused:?}"
            );
        }
        // Metadata and unspecified addresses stay refused with the private-network permission.
        for host in [
            "169.254.169.254",
            "[fd00:ec2::254]",
            "192.0.0.192",
            "100.100.100.200",
            "[64:ff9b::a9fe:a9fe]",
            "[2002:a9fe:a9fe::]",
            "169.254.169.254.nip.io",
            "0.0.0.0",
            "[::]",
            "anywhere.example",
            "oracle.example",
            "alibaba.example",
            "aws6.example",
        ] {
            let mut connector = GuardedConnector::new(resolver(), true, Duration::from_secs(2));
            let uri: Uri = format!("http://{host}:{port}/v1").parse().unwrap();
            let refused = connector.call(uri).await;
            assert!(
                matches!(refused, Err(ConnectError::Refused { .. })),
                "{host}: {refused:?}"
            );
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "a refused host was connected to"
        );

        // With the permission, loopback by a numeric form or a name is reached.
        for host in ["2130706433", "vm", "0x7f.1"] {
            let mut connector = GuardedConnector::new(resolver(), true, Duration::from_secs(2));
            let uri: Uri = format!("http://{host}:{port}/v1").parse().unwrap();
            assert!(connector.call(uri).await.is_ok(), "{host}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_name_resolving_to_public_and_private_addresses_keeps_only_the_public_ones() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let mixed = TableResolver(HashMap::from([(
            "mixed.example",
            vec![ip("127.0.0.1"), ip("8.8.8.8"), ip("169.254.169.254")],
        )]));
        let permitted = permitted_addresses(&mixed, "mixed.example", 443, false)
            .await
            .unwrap();
        assert_eq!(permitted, vec![SocketAddr::new(ip("8.8.8.8"), 443)]);
        let error = permitted_addresses(&mixed, "nowhere.example", 443, false)
            .await
            .unwrap_err();
        assert!(matches!(error, ConnectError::Resolve { .. }), "{error}");
        let refused = permitted_addresses(&*resolver(), "vm", 443, false)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("allow_private_network"),
            "{refused}"
        );
    }
}
