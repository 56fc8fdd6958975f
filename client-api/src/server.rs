//! The client API's HTTP server. Every connection must earn its file descriptor: it is admitted
//! only under a total and a per-address cap (kept below the process's descriptor limit, so the
//! store, federation and admin always have some), it must send a request's headers within a
//! deadline (a connection that sends nothing, half a request or half a WebSocket upgrade is
//! closed; so is a keep-alive connection idle for as long), and request bodies must keep
//! arriving. Running out of descriptors anyway makes the loop pause, not spin.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::forwarded::TrustedProxies;

/// Caps and deadlines for client connections.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open client connections, WebSockets included.
    pub max_connections: usize,
    /// Open client connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time a connection has to send a request's headers, from when it opens or finishes its
    /// previous request.
    pub header_timeout: Duration,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the hearth holds its maximum of client connections")]
    Full,
    #[error("this address holds its maximum of client connections")]
    AddressFull,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    admitted: u64,
    refused_full: u64,
    refused_address_full: u64,
}

/// Connections open now, and refused since start, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub open: usize,
    pub admitted: u64,
    pub refused_full: u64,
    pub refused_address_full: u64,
}

/// Counts open connections, in total and per address.
#[derive(Debug, Clone)]
pub struct Admissions {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_ip: usize,
    /// Reverse proxies: they carry many clients' connections, so only the total caps theirs.
    proxies: TrustedProxies,
}

impl Admissions {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total,
            max_per_ip,
            proxies: TrustedProxies::default(),
        }
    }

    /// Trusts `proxies`: the per-address cap does not apply to them, and requests they carry
    /// are from the client their `X-Forwarded-For` names ([`TrustedProxies::client`]).
    pub fn trusting(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// Admits a connection from `ip`; it counts until the returned value is dropped.
    pub fn admit(&self, ip: IpAddr) -> Result<Admission, Refusal> {
        let proxy = self.proxies.trusts(ip);
        let ip = counted_as(ip);
        let mut counts = self.counts.lock().expect("admissions lock");
        if counts.total >= self.max_total {
            counts.refused_full += 1;
            return Err(Refusal::Full);
        }
        if !proxy {
            let from_ip = counts.per_ip.entry(ip).or_default();
            if *from_ip >= self.max_per_ip {
                counts.refused_address_full += 1;
                return Err(Refusal::AddressFull);
            }
            *from_ip += 1;
        }
        counts.total += 1;
        counts.admitted += 1;
        Ok(Admission {
            counts: self.counts.clone(),
            ip: (!proxy).then_some(ip),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().expect("admissions lock").total
    }

    pub fn counts(&self) -> ConnectionCounts {
        let counts = self.counts.lock().expect("admissions lock");
        ConnectionCounts {
            open: counts.total,
            admitted: counts.admitted,
            refused_full: counts.refused_full,
            refused_address_full: counts.refused_address_full,
        }
    }
}

/// One admitted connection's place.
#[derive(Debug)]
pub struct Admission {
    counts: Arc<Mutex<Counts>>,
    /// The address it counts under (none for a trusted proxy's).
    ip: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("admissions lock");
        counts.total -= 1;
        if let Some(ip) = self.ip
            && let Some(n) = counts.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// A TCP stream that holds its admission for as long as it lives (through a WebSocket upgrade).
struct AdmittedStream {
    tcp: TcpStream,
    _admission: Admission,
}

impl AsyncRead for AdmittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdmittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Logs a recurring condition at most once per interval, with how often it happened since.
struct Throttled {
    last: Option<Instant>,
    since: u64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self {
            last: None,
            since: 0,
        }
    }

    /// The count to log now, if it is time to.
    fn tick(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

/// Whether an accept error means this process (or the system) is out of descriptors or memory:
/// waiting lets connections close; retrying at once would spin.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The key connections are counted under: the address, or for IPv6 its /64 (one host's usual
/// allocation, which it can spread over at will).
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in progress
/// finish (WebSockets are ended by their own sessions) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    admissions: Admissions,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut refused = Throttled::new();
    let mut exhausted = Throttled::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_resource_exhaustion(&e) => {
                    if let Some(n) = exhausted.tick() {
                        tracing::error!(error = %e, times = n, "cannot accept client connections: out of resources; pausing");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let admission = match admissions.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refusal) => {
                if let Some(n) = refused.tick() {
                    tracing::warn!(%refusal, peer = %peer.ip(), times = n, open = admissions.open(), "client connection refused");
                }
                drop(tcp);
                continue;
            }
        };
        // Small frames (an `accepted` then an `event`) must not wait for a delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let io = TokioIo::new(AdmittedStream {
            tcp,
            _admission: admission,
        });
        let router = router.clone();
        let proxies = admissions.proxies.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Every handler takes the client's address from here (rate limits, last seen).
            let client = proxies.client(peer.ip(), request.headers());
            let client = std::net::SocketAddr::new(client, peer.port());
            request.extensions_mut().insert(ConnectInfo(client));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "client connection ended");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection task holds a receiver; they are all gone once the last one ends (this
    // one first: waiting while holding it waited for ever, cut short only by the caller's
    // timeout, 10 s on every shutdown).
    drop(stopping);
    stop.closed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_ends_idle_connections_and_returns() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = ServerLimits {
            max_connections: 10,
            max_connections_per_ip: 10,
            header_timeout: Duration::from_secs(60),
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            limits,
            Admissions::new(10, 10),
            async move {
                let _ = stopped.await;
            },
        ));
        // A keep-alive connection, idle after its request.
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0; 1024];
        let n = client.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));

        shutdown.send(()).unwrap();
        // Returns once the idle connection is closed: no waiting out the caller's deadline
        // (the bound here only turns a hang into a failure).
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("serve returned after shutdown")
            .unwrap();
        assert_eq!(client.read(&mut answer).await.unwrap(), 0);
    }

    #[test]
    fn connections_are_capped_in_total_and_per_address() {
        let admissions = Admissions::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = admissions.admit(a).unwrap();
        let _second = admissions.admit(a).unwrap();
        assert_eq!(admissions.admit(a).unwrap_err(), Refusal::AddressFull);
        let _third = admissions.admit(b).unwrap();
        assert_eq!(admissions.admit(b).unwrap_err(), Refusal::Full);
        assert_eq!(admissions.open(), 3);
        drop(first);
        assert_eq!(admissions.open(), 2);
        let _again = admissions.admit(a).unwrap();
        assert_eq!(admissions.admit(a).unwrap_err(), Refusal::Full);
        assert_eq!(
            admissions.counts(),
            ConnectionCounts {
                open: 3,
                admitted: 4,
                refused_full: 2,
                refused_address_full: 1
            }
        );
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let admissions = Admissions::new(100, 1);
        let _one = admissions
            .admit("2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        assert_eq!(
            admissions
                .admit("2001:db8:1:2::ffff".parse().unwrap())
                .unwrap_err(),
            Refusal::AddressFull
        );
        admissions
            .admit("2001:db8:1:3::1".parse().unwrap())
            .unwrap();
        let _v4 = admissions.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            admissions
                .admit("::ffff:192.0.2.1".parse().unwrap())
                .unwrap_err(),
            Refusal::AddressFull
        );
    }

    #[test]
    fn a_recurring_condition_is_logged_once_per_interval_with_its_count() {
        let mut throttled = Throttled::new();
        assert_eq!(throttled.tick(), Some(1));
        assert_eq!(throttled.tick(), None);
        assert_eq!(throttled.tick(), None);
        throttled.last = Some(Instant::now() - Throttled::EVERY);
        assert_eq!(throttled.tick(), Some(3));
    }
}
