//! Idle upstream connections, kept per thread. An HTTP/1.1 connection is used by whichever
//! request holds it, in that request's own task: no connection task, no channel hop between
//! tasks and no shared pool lock on the way to the upstream and back. A serving thread runs
//! its own single-threaded runtime, so the connections a thread opened are the ones it reuses.
//! An HTTP/2 connection is shared by the thread's requests and driven by a task of its own.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::fast_hash::FastMap;
use bytes::Bytes;
use http::uri::Authority;
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::http1::Http1Connection;

pub type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
pub type RequestBody = Full<Bytes>;
pub type Http2Sender = http2::SendRequest<RequestBody>;

/// An idle connection is closed after this long unused: providers close theirs after a minute
/// or two, and one found closed costs a wasted attempt at checkout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept per host and thread; more come back only after a burst.
const MAX_IDLE_PER_HOST: usize = 256;
/// How often a thread's pool is swept of connections that outlived [`IDLE_TIMEOUT`], so that
/// a host no longer called does not hold sockets for ever.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Where a connection goes: connections are never shared between clients, between schemes, or
/// between providers that may and may not reach private addresses (the address was judged for
/// the one that opened it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub client: u64,
    pub tls: bool,
    pub allow_private_network: bool,
    pub authority: Authority,
}

struct Idle {
    connection: Http1Connection,
    since: Instant,
}

#[derive(Default)]
struct Host {
    /// Oldest first: checkout takes the most recently used, whose peer is least likely to have
    /// closed it.
    http1: Vec<Idle>,
    http2: Option<Http2Sender>,
}

struct Pool {
    /// Hashed like the routing tables (`fast_hash`): keys come from provider records, not from
    /// clients, and are hashed twice a request.
    hosts: FastMap<PoolKey, Host>,
    swept: Instant,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool {
        hosts: FastMap::default(),
        swept: Instant::now(),
    });
}

pub enum Pooled {
    Http1(Http1Connection),
    Http2(Http2Sender),
}

/// A connection to `key` this thread holds, if any is still usable: an open HTTP/2 connection
/// (shared) or the most recently used idle HTTP/1.1 one (taken).
pub fn checkout(key: &PoolKey) -> Option<Pooled> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let host = pool.hosts.get_mut(key)?;
        if let Some(sender) = &host.http2 {
            if !sender.is_closed() {
                return Some(Pooled::Http2(sender.clone()));
            }
            host.http2 = None;
        }
        let idle = host.http1.pop()?;
        if idle.since.elapsed() >= IDLE_TIMEOUT {
            // The rest are older still.
            host.http1.clear();
            return None;
        }
        Some(Pooled::Http1(idle.connection))
    })
}

/// Returns an HTTP/1.1 connection whose last answer has been read in full.
pub fn check_in(key: PoolKey, connection: Http1Connection) {
    // A body dropped while its thread shuts down finds no pool: its connection just closes.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let now = Instant::now();
        if now.duration_since(pool.swept) >= SWEEP_EVERY {
            pool.swept = now;
            sweep(&mut pool.hosts, now);
        }
        let host = pool.hosts.entry(key).or_default();
        if host.http1.len() < MAX_IDLE_PER_HOST {
            host.http1.push(Idle {
                connection,
                since: now,
            });
        }
    });
}

/// Shares `sender` with this thread's later requests to `key`, unless one is shared already.
pub fn share_http2(key: PoolKey, sender: &Http2Sender) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let host = pool.hosts.entry(key).or_default();
        if host.http2.as_ref().is_none_or(Http2Sender::is_closed) {
            host.http2 = Some(sender.clone());
        }
    });
}

/// Forgets a shared HTTP/2 connection that failed a request before sending it.
pub fn forget_http2(key: &PoolKey) {
    POOL.with(|pool| {
        if let Some(host) = pool.borrow_mut().hosts.get_mut(key) {
            host.http2 = None;
        }
    });
}

fn sweep(hosts: &mut FastMap<PoolKey, Host>, now: Instant) {
    hosts.retain(|_, host| {
        host.http1
            .retain(|idle| now.duration_since(idle.since) < IDLE_TIMEOUT);
        if host.http2.as_ref().is_some_and(Http2Sender::is_closed) {
            host.http2 = None;
        }
        !host.http1.is_empty() || host.http2.is_some()
    });
}

/// Idle HTTP/1.1 connections this thread holds for `key`.
#[cfg(test)]
pub fn idle_count(key: &PoolKey) -> usize {
    POOL.with(|pool| {
        pool.borrow()
            .hosts
            .get(key)
            .map_or(0, |host| host.http1.len())
    })
}
