//! The QUIC transport: one endpoint that listens for peers and dials them, one long-lived
//! connection per peer, one bidirectional stream per batch.
//!
//! A batch stream carries length-prefixed signed envelopes and ends; the receiver reads it whole
//! (bounded), checks each envelope, hands the good ones to the [`Inbound`] handler, and answers
//! with one [`Outcome`] per envelope (or refuses the whole stream if its framing is broken).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::keyring::KeyRing;
use hearth_spec::api::{ClaimedKeyPackage, KeyDevices, MAX_USERS_PER_KEY_REQUEST};
use hearth_spec::federation::{
    FedBody, FedEnvelope, MAX_FRAMES_PER_STREAM, MAX_MEDIA_CHUNK, Outcome, RejectCode, RetryCode,
    StreamError, StreamReply, push_frame, split_frames,
};
use hearth_spec::rate::{Bucket, Rate};
use hearth_spec::{DeviceId, PublicKey, ServerName, UserId};
use quinn::VarInt;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::check::{Freshness, ReplayCache, check_batch};
use crate::clock::now_ms;
use crate::directory::Directory;
use crate::tls::{self, TLS_NAME, TlsError};

/// Transport limits and timings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub own: ServerName,
    pub listen: SocketAddr,
    pub freshness: Freshness,
    /// Concurrent batch streams a peer may open.
    pub max_streams_per_peer: u32,
    /// Bytes one batch stream may carry.
    pub max_stream_bytes: u32,
    /// Bytes in flight on one connection (QUIC's connection receive window).
    pub connection_window: u32,
    /// Envelopes a peer may send.
    pub envelopes: Rate,
    /// How long a stream may take to arrive or be answered.
    pub stream_timeout: Duration,
    /// How often an idle connection sends a PING so that it stays open.
    pub keep_alive: Duration,
    /// A connection that hears nothing for this long is closed (a peer that died unnoticed).
    pub idle_timeout: Duration,
    /// How many recent envelope signatures are remembered against replay.
    pub replay_capacity: usize,
    /// Keys QUIC stateless resets. Keep it across restarts (the node stores it): a peer still
    /// holding a connection from before the restart then gets a reset for its first packet and
    /// dials again at once, instead of waiting out the idle timeout.
    pub reset_secret: [u8; 32],
    /// Finds hearths that are not in the directory (dialled by name, or calling with a key the
    /// directory does not hold). `None`: only known hearths are reached and admitted.
    pub discovery: Option<crate::discovery::Discovery>,
    /// Hearths nothing is sent to and nothing is taken from.
    pub blocked: crate::blocklist::Blocklist,
}

impl TransportConfig {
    /// Defaults for `own` listening on `listen`.
    pub fn new(own: ServerName, listen: SocketAddr) -> Self {
        Self {
            own,
            listen,
            freshness: Freshness::default(),
            max_streams_per_peer: 8,
            max_stream_bytes: 8 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            envelopes: Rate::new(50_000.0, 100_000.0),
            stream_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            replay_capacity: 1 << 20,
            reset_secret: rand::random(),
            discovery: None,
            blocked: Default::default(),
        }
    }
}

/// What a hearth does with checked envelopes from a peer. The answer has one outcome per
/// envelope, in order.
pub trait Inbound: Send + Sync + 'static {
    fn receive(
        &self,
        peer: ServerName,
        envelopes: Vec<FedEnvelope>,
    ) -> impl Future<Output = Vec<Outcome>> + Send;
    /// Hands out key packages of a local user to a checked `ClaimKeyPackages` from `peer`. A
    /// receiver that keeps none refuses.
    fn claim(
        &self,
        peer: ServerName,
        user: UserId,
        devices: Option<Vec<DeviceId>>,
    ) -> impl Future<Output = Result<Vec<ClaimedKeyPackage>, Outcome>> + Send {
        let _ = (peer, user, devices);
        async { Err(Outcome::Rejected(RejectCode::Forbidden)) }
    }
    /// Reads up to `len` bytes from `offset` of a stored blob for a checked `FetchMedia` from
    /// `peer`: the blob's length and the bytes. A receiver that keeps none refuses.
    fn fetch_media(
        &self,
        peer: ServerName,
        media_id: [u8; 32],
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(u64, Vec<u8>), Outcome>> + Send {
        let _ = (peer, media_id, offset, len);
        async { Err(Outcome::Rejected(RejectCode::Forbidden)) }
    }
    /// Lists the end-to-end devices of local users for a checked `QueryDevices` from `peer`. A
    /// receiver that keeps none refuses.
    fn query_devices(
        &self,
        peer: ServerName,
        users: Vec<UserId>,
    ) -> impl Future<Output = Result<Vec<KeyDevices>, Outcome>> + Send {
        let _ = (peer, users);
        async { Err(Outcome::Rejected(RejectCode::Forbidden)) }
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("QUIC refused the TLS configuration: {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("QUIC needs a Tokio runtime")]
    NoRuntime,
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        addr: SocketAddr,
        reason: std::io::Error,
    },
}

/// How long a request waits for a connection to its peer.
const REQUEST_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Why a request answered on its own stream (a key-package claim, a blob fetch) failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Send(SendError),
    #[error("the peer refused the request: {0:?}")]
    Rejected(RejectCode),
    #[error("the peer asked to retry the request later: {0:?}")]
    Retry(RetryCode),
}

/// Why a batch could not be handed over. The caller keeps the batch and retries later.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("this hearth's admin blocked {0}")]
    Blocked(ServerName),
    #[error("{0} is not a known peer")]
    UnknownPeer(ServerName),
    #[error("cannot set up TLS for {0}: {1}")]
    Tls(ServerName, #[source] TlsError),
    #[error("QUIC refused the TLS configuration: {0}")]
    QuicConfig(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("cannot connect: {0}")]
    Connect(#[source] quinn::ConnectError),
    #[error("the handshake failed: {0}")]
    Handshake(#[source] quinn::ConnectionError),
    #[error("the handshake timed out")]
    HandshakeTimeout,
    #[error("the connection failed: {0}")]
    Connection(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the peer refused the stream: {0}")]
    Refused(StreamError),
    #[error("the peer's answer is malformed")]
    BadReply,
    #[error("the peer did not answer in time")]
    Timeout,
}

struct Shared {
    /// Whether the endpoint still accepts connections (false once it closed).
    accepting: std::sync::atomic::AtomicBool,
    config: TransportConfig,
    keys: Arc<KeyRing>,
    directory: Arc<RwLock<Directory>>,
    endpoint: quinn::Endpoint,
    links: Mutex<HashMap<ServerName, Arc<tokio::sync::Mutex<Option<quinn::Connection>>>>>,
    budgets: Mutex<HashMap<ServerName, Bucket>>,
    replay: Mutex<ReplayCache>,
    transport: Arc<quinn::TransportConfig>,
    /// Since when each peer has not answered (absent: it answered the last attempt).
    failing: Mutex<HashMap<ServerName, Instant>>,
    /// Woken when a peer connects to us: it is back, so queues for it need not wait.
    arrivals: Mutex<HashMap<ServerName, Arc<tokio::sync::Notify>>>,
}

/// The running transport. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("own", &self.shared.config.own)
            .finish_non_exhaustive()
    }
}

fn quic_transport(config: &TransportConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams_per_peer))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        // quinn leaves the connection window unbounded by default; a peer could make us buffer
        // without limit.
        .receive_window(VarInt::from_u32(config.connection_window))
        .stream_receive_window(VarInt::from_u32(config.max_stream_bytes))
        .send_window(u64::from(config.connection_window))
        .keep_alive_interval(Some(config.keep_alive))
        .max_idle_timeout(Some(
            // Over 2^62 ms only: clamp what could never matter.
            quinn::IdleTimeout::try_from(config.idle_timeout)
                .unwrap_or_else(|_| quinn::IdleTimeout::from(VarInt::MAX)),
        ));
    t
}

impl Transport {
    /// Binds the endpoint and starts accepting peers.
    pub fn start<I: Inbound>(
        config: TransportConfig,
        keys: Arc<KeyRing>,
        directory: Arc<RwLock<Directory>>,
        inbound: Arc<I>,
    ) -> Result<Self, StartError> {
        let transport = Arc::new(quic_transport(&config));
        let tls = tls::server_config(keys.clone(), config.discovery.is_some(), directory.clone())?;
        let crypto = QuicServerConfig::try_from(tls).map_err(StartError::Quic)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport.clone());
        let listen = |source| StartError::Listen {
            addr: config.listen,
            reason: source,
        };
        let reset_key = ResetKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &config.reset_secret,
        ));
        let runtime = quinn::default_runtime().ok_or(StartError::NoRuntime)?;
        let socket = std::net::UdpSocket::bind(config.listen).map_err(listen)?;
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        // The restarted endpoint must also recognise its old connection ids as its own, or it
        // drops the packet instead of answering it with a reset.
        let cid_key = u64::from_le_bytes(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &config.reset_secret).as_ref()
                [..8]
                .try_into()
                .expect("8 bytes"),
        );
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let endpoint =
            quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime).map_err(listen)?;
        let shared = Arc::new(Shared {
            accepting: std::sync::atomic::AtomicBool::new(true),
            replay: Mutex::new(ReplayCache::new(config.replay_capacity)),
            config,
            keys,
            directory,
            endpoint,
            links: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            transport,
            failing: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(HashMap::new()),
        });
        tokio::spawn(accept_loop(shared.clone(), inbound));
        Ok(Self { shared })
    }

    /// Where the endpoint listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared
            .endpoint
            .local_addr()
            .unwrap_or(self.shared.config.listen)
    }

    /// Whether peers can connect: the endpoint is open and its accept loop runs.
    pub fn is_listening(&self) -> bool {
        self.shared
            .accepting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes every connection and the endpoint.
    pub fn close(&self) {
        self.shared
            .endpoint
            .close(VarInt::from_u32(0), b"shutting down");
    }

    /// Sends one batch of signed envelopes to `peer` and returns its outcomes.
    pub async fn send(
        &self,
        peer: &ServerName,
        frames: &[Vec<u8>],
    ) -> Result<Vec<Outcome>, SendError> {
        if self.shared.config.blocked.contains(peer) {
            return Err(SendError::Blocked(peer.clone()));
        }
        // Counted from the start of an attempt, so a peer that swallows packets without
        // answering is seen as unreachable before the attempt times out.
        self.shared
            .failing
            .lock()
            .expect("failing lock")
            .entry(peer.clone())
            .or_insert_with(Instant::now);
        let result = match self.connection(peer).await {
            Ok(connection) => {
                let result = self.send_on(peer, &connection, frames).await;
                if matches!(result, Err(SendError::Connection(_) | SendError::Timeout)) {
                    connection.close(VarInt::from_u32(1), b"stream failed");
                }
                result
            }
            Err(e) => Err(e),
        };
        if matches!(
            result,
            Ok(_) | Err(SendError::Refused(_) | SendError::BadReply)
        ) {
            self.shared
                .failing
                .lock()
                .expect("failing lock")
                .remove(peer);
        }
        result
    }

    /// Sends one signed `ClaimKeyPackages` envelope to `peer` and returns the packages it
    /// handed out.
    pub async fn claim(
        &self,
        peer: &ServerName,
        frame: Vec<u8>,
    ) -> Result<Vec<ClaimedKeyPackage>, RequestError> {
        match self.request(peer, frame).await? {
            StreamReply::KeyPackages(packages) => Ok(packages),
            _ => Err(RequestError::Send(SendError::BadReply)),
        }
    }

    /// Sends one signed `QueryDevices` envelope to `peer` and returns the devices it listed.
    pub async fn query_devices(
        &self,
        peer: &ServerName,
        frame: Vec<u8>,
    ) -> Result<Vec<KeyDevices>, RequestError> {
        match self.request(peer, frame).await? {
            StreamReply::Devices(devices) => Ok(devices),
            _ => Err(RequestError::Send(SendError::BadReply)),
        }
    }

    /// Sends one signed `FetchMedia` envelope to `peer` and returns the blob's length and the
    /// part asked for.
    pub async fn fetch_media(
        &self,
        peer: &ServerName,
        frame: Vec<u8>,
    ) -> Result<(u64, Vec<u8>), RequestError> {
        match self.request(peer, frame).await? {
            StreamReply::MediaChunk { total, bytes } => Ok((total, bytes)),
            _ => Err(RequestError::Send(SendError::BadReply)),
        }
    }

    /// Sends one request envelope alone in a stream and returns the peer's answer; a refusal
    /// of it becomes the error.
    async fn request(
        &self,
        peer: &ServerName,
        frame: Vec<u8>,
    ) -> Result<StreamReply, RequestError> {
        // A device waits on this. Dialling waits behind a queue driver's attempt to the same
        // peer, so without a bound an unreachable peer costs two handshake timeouts or more.
        let connection = tokio::time::timeout(REQUEST_CONNECT_WAIT, self.connection(peer))
            .await
            .map_err(|_| RequestError::Send(SendError::Timeout))?
            .map_err(RequestError::Send)?;
        match self
            .exchange(&connection, std::slice::from_ref(&frame))
            .await
        {
            Ok(StreamReply::Outcomes(outcomes)) => match outcomes.as_slice() {
                [Outcome::Rejected(code)] => Err(RequestError::Rejected(*code)),
                [Outcome::Retry(code)] => Err(RequestError::Retry(*code)),
                _ => Err(RequestError::Send(SendError::BadReply)),
            },
            Ok(StreamReply::Refused(e)) => Err(RequestError::Send(SendError::Refused(e))),
            Ok(reply) => Ok(reply),
            Err(e) => {
                if matches!(e, SendError::Connection(_) | SendError::Timeout) {
                    connection.close(VarInt::from_u32(1), b"stream failed");
                }
                Err(RequestError::Send(e))
            }
        }
    }

    /// How long `peer` has gone without answering: since the start of the first attempt after
    /// its last answer (none if it answered the last attempt and none is under way).
    pub fn failing_for(&self, peer: &ServerName) -> Option<Duration> {
        self.shared
            .failing
            .lock()
            .expect("failing lock")
            .get(peer)
            .map(Instant::elapsed)
    }

    /// Notified whenever `peer` connects to this hearth.
    pub fn arrivals(&self, peer: &ServerName) -> Arc<tokio::sync::Notify> {
        arrivals(&self.shared, peer)
    }

    async fn send_on(
        &self,
        peer: &ServerName,
        connection: &quinn::Connection,
        frames: &[Vec<u8>],
    ) -> Result<Vec<Outcome>, SendError> {
        match self.exchange(connection, frames).await? {
            StreamReply::Outcomes(outcomes) if outcomes.len() == frames.len() => {
                count_envelopes("out", peer, &outcomes);
                Ok(outcomes)
            }
            StreamReply::Outcomes(_)
            | StreamReply::KeyPackages(_)
            | StreamReply::MediaChunk { .. }
            | StreamReply::Devices(_) => Err(SendError::BadReply),
            StreamReply::Refused(e) => Err(SendError::Refused(e)),
        }
    }

    /// Writes one stream of frames and reads the receiver's answer.
    async fn exchange(
        &self,
        connection: &quinn::Connection,
        frames: &[Vec<u8>],
    ) -> Result<StreamReply, SendError> {
        fn lost(e: impl std::error::Error + Send + Sync + 'static) -> SendError {
            SendError::Connection(Box::new(e))
        }
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
            let mut bytes = Vec::with_capacity(frames.iter().map(|f| f.len() + 4).sum());
            for frame in frames {
                push_frame(&mut bytes, frame);
            }
            send.write_all(&bytes).await.map_err(lost)?;
            send.finish().map_err(lost)?;
            recv.read_to_end(1 << 20).await.map_err(lost)
        };
        let answer = tokio::time::timeout(self.shared.config.stream_timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout)??;
        StreamReply::decode(&answer).map_err(|_| SendError::BadReply)
    }

    /// Peers this hearth holds an open outbound connection to now (a connection to a peer that
    /// died closes after the idle timeout).
    pub fn connected_peers(&self) -> Vec<ServerName> {
        let links = self.shared.links.lock().expect("links lock");
        links
            .iter()
            .filter(|(_, slot)| {
                // A slot being dialled is not connected yet.
                slot.try_lock()
                    .is_ok_and(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
            })
            .map(|(peer, _)| peer.clone())
            .collect()
    }

    /// The hearths this transport neither reaches nor admits.
    pub fn blocked(&self) -> &crate::blocklist::Blocklist {
        &self.shared.config.blocked
    }

    /// The live connection to `peer`, dialling if there is none.
    pub async fn connection(&self, peer: &ServerName) -> Result<quinn::Connection, SendError> {
        if self.shared.config.blocked.contains(peer) {
            return Err(SendError::Blocked(peer.clone()));
        }
        let slot = self
            .shared
            .links
            .lock()
            .expect("links lock")
            .entry(peer.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        // Looks the peer up in the DHT if the directory does not know it (a no-op if it does).
        if let Some(discovery) = &self.shared.config.discovery
            && let Err(e) = discovery.resolve_name(peer).await
        {
            tracing::debug!(%peer, error = %e, "cannot find a peer");
            return Err(SendError::UnknownPeer(peer.clone()));
        }
        let address = self
            .shared
            .directory
            .read()
            .expect("directory lock")
            .address(peer)
            .ok_or_else(|| SendError::UnknownPeer(peer.clone()))?;
        let tls = tls::client_config(
            self.shared.keys.clone(),
            peer.clone(),
            self.shared.directory.clone(),
        )
        .map_err(|e| SendError::Tls(peer.clone(), e))?;
        let crypto = QuicClientConfig::try_from(tls).map_err(SendError::QuicConfig)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(self.shared.transport.clone());
        let connecting = self
            .shared
            .endpoint
            .connect_with(client, address, TLS_NAME)
            .map_err(SendError::Connect)?;
        let connection = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| SendError::HandshakeTimeout)?
            .map_err(SendError::Handshake)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

/// The stateless-reset key. quinn implements its key trait for whichever of ring and aws-lc-rs
/// it was built with (libp2p's QUIC brings ring); this wrapper works with either.
struct ResetKey(aws_lc_rs::hmac::Key);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        signature_out.copy_from_slice(aws_lc_rs::hmac::sign(&self.0, data).as_ref());
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        aws_lc_rs::hmac::verify(&self.0, data, signature).map_err(|_| quinn::crypto::CryptoError)
    }
}

fn arrivals(shared: &Shared, peer: &ServerName) -> Arc<tokio::sync::Notify> {
    shared
        .arrivals
        .lock()
        .expect("arrivals lock")
        .entry(peer.clone())
        .or_default()
        .clone()
}

async fn accept_loop<I: Inbound>(shared: Arc<Shared>, inbound: Arc<I>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        tokio::spawn(serve_connection(incoming, shared.clone(), inbound.clone()));
    }
    shared
        .accepting
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

/// The key a TLS-authenticated connection was made with.
fn peer_key(connection: &quinn::Connection) -> Option<PublicKey> {
    let identity = connection.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::certificate_key(certs.first()?)
}

/// The hearth a TLS-authenticated connection comes from: known to the directory, or found in
/// the DHT by its key.
async fn identify(connection: &quinn::Connection, shared: &Shared) -> Option<ServerName> {
    let key = peer_key(connection)?;
    match &shared.config.discovery {
        // Answers from the directory when it knows the key.
        Some(discovery) => discovery
            .resolve_key(&key)
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "a stranger called"))
            .ok(),
        None => shared
            .directory
            .read()
            .expect("directory lock")
            .owner(&key, now_ms())
            .ok()
            .cloned(),
    }
}

/// The QUIC application close code for a connection from a hearth this one blocked.
pub const BLOCKED_CLOSE_CODE: u32 = 3;

async fn serve_connection<I: Inbound>(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    inbound: Arc<I>,
) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "federation handshake failed");
            return;
        }
    };
    let peer = identify(&connection, &shared).await;
    let Some(peer) = peer else {
        connection.close(VarInt::from_u32(2), b"unknown peer");
        return;
    };
    tracing::debug!(%peer, "peer connected");
    if !shared.config.blocked.contains(&peer) {
        arrivals(&shared, &peer).notify_waiters();
    }
    let refuse = || {
        tracing::info!(%peer, "refused a blocked hearth");
        connection.close(VarInt::from_u32(BLOCKED_CLOSE_CODE), b"blocked");
    };
    if shared.config.blocked.contains(&peer) {
        return refuse();
    }
    while let Ok((send, recv)) = connection.accept_bi().await {
        // Checked per stream, so a connection open when the block came closes at its next one.
        if shared.config.blocked.contains(&peer) {
            return refuse();
        }
        tokio::spawn(serve_stream(
            peer.clone(),
            send,
            recv,
            shared.clone(),
            inbound.clone(),
        ));
    }
}

async fn serve_stream<I: Inbound>(
    peer: ServerName,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
    inbound: Arc<I>,
) {
    let limit = shared.config.max_stream_bytes as usize;
    let read = tokio::time::timeout(shared.config.stream_timeout, recv.read_to_end(limit)).await;
    let reply = match read {
        Err(_) => StreamReply::Refused(StreamError::Timeout),
        Ok(Err(quinn::ReadToEndError::TooLong)) => StreamReply::Refused(StreamError::TooLarge),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "batch stream failed");
            return;
        }
        Ok(Ok(bytes)) => match handle_batch(shared, &peer, bytes, inbound.as_ref()).await {
            Some(reply) => reply,
            None => return,
        },
    };
    if let StreamReply::Refused(e) = &reply {
        tracing::warn!(%peer, error = %e, "refused a federation stream");
    }
    let _ = send.write_all(&reply.encode()).await;
    let _ = send.finish();
    // Let the answer reach the peer before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

/// Checks a batch and hands what passes to `inbound`. `None` when the check could not run (the
/// hearth is stopping): the stream goes unanswered and the sender retries the whole batch.
/// Streams up to this size (a few envelopes: one or two signature checks, tens of
/// microseconds) are checked on the async worker; the hop to a blocking thread would cost more
/// than the work. Bigger batches go to a blocking thread.
const INLINE_CHECK_BYTES: usize = 8 * 1024;

async fn handle_batch<I: Inbound>(
    shared: Arc<Shared>,
    peer: &ServerName,
    bytes: Vec<u8>,
    inbound: &I,
) -> Option<StreamReply> {
    let checking = std::time::Instant::now();
    // Framing and signature checks are CPU work: keep them off the async workers.
    let checked = if bytes.len() <= INLINE_CHECK_BYTES {
        Ok(check_stream(&shared, peer, &bytes))
    } else {
        let peer = peer.clone();
        tokio::task::spawn_blocking(move || check_stream(&shared, &peer, &bytes)).await
    };
    crate::stage::since("fed_check", checking);
    let verdicts = match checked.ok()? {
        Ok(verdicts) => verdicts,
        Err(e) => return Some(StreamReply::Refused(e)),
    };
    // A request travels alone and is answered with what it asked for.
    if let [Ok(envelope)] = verdicts.as_slice()
        && is_request(&envelope.body)
    {
        return Some(answer_request(inbound, peer, &envelope.body).await);
    }
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(verdicts.len());
    let mut passed = Vec::new();
    for verdict in verdicts {
        match verdict {
            Ok(envelope) if is_request(&envelope.body) => {
                outcomes.push(Some(Outcome::Rejected(RejectCode::BadEvent)));
            }
            Ok(envelope) => {
                outcomes.push(None);
                passed.push(envelope);
            }
            Err(outcome) => {
                tracing::debug!(%peer, ?outcome, "refused an envelope");
                outcomes.push(Some(outcome));
            }
        }
    }
    let mut answers = if passed.is_empty() {
        Vec::new()
    } else {
        let count = passed.len();
        let storing = std::time::Instant::now();
        let answers = inbound.receive(peer.clone(), passed).await;
        crate::stage::since("fed_store", storing);
        if answers.len() != count {
            tracing::error!("inbound handler answered {} of {count}", answers.len());
            return Some(StreamReply::Outcomes(vec![
                Outcome::Retry(
                    RetryCode::Unavailable
                );
                outcomes.len()
            ]));
        }
        answers
    }
    .into_iter();
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| answers.next().expect("counted")))
        .collect();
    count_envelopes("in", peer, &outcomes);
    Some(StreamReply::Outcomes(outcomes))
}

/// Counts envelopes by direction, peer and outcome (`hearth_federation_envelopes_total`).
fn count_envelopes(direction: &'static str, peer: &ServerName, outcomes: &[Outcome]) {
    for outcome in outcomes {
        let (outcome, code) = match outcome {
            Outcome::Stored => ("stored", String::new()),
            Outcome::Duplicate => ("duplicate", String::new()),
            Outcome::Rejected(code) => ("rejected", format!("{code:?}")),
            Outcome::Retry(code) => ("retry", format!("{code:?}")),
        };
        metrics::counter!(
            "hearth_federation_envelopes_total",
            "direction" => direction,
            "peer" => peer.as_str().to_owned(),
            "outcome" => outcome,
            "code" => code,
        )
        .increment(1);
    }
}

/// Bodies answered on their own stream with what they ask for, never queued or batched.
fn is_request(body: &FedBody) -> bool {
    matches!(
        body,
        FedBody::ClaimKeyPackages { .. }
            | FedBody::FetchMedia { .. }
            | FedBody::QueryDevices { .. }
    )
}

async fn answer_request<I: Inbound>(inbound: &I, peer: &ServerName, body: &FedBody) -> StreamReply {
    let refused = |outcome| StreamReply::Outcomes(vec![outcome]);
    match body {
        FedBody::ClaimKeyPackages { user, devices } => match inbound
            .claim(peer.clone(), user.clone(), devices.clone())
            .await
        {
            Ok(packages) => StreamReply::KeyPackages(packages),
            Err(outcome) => refused(outcome),
        },
        FedBody::FetchMedia { len, .. } if *len > MAX_MEDIA_CHUNK => {
            refused(Outcome::Rejected(RejectCode::TooLarge))
        }
        FedBody::FetchMedia {
            media_id,
            offset,
            len,
        } => match inbound
            .fetch_media(peer.clone(), *media_id, *offset, *len)
            .await
        {
            Ok((total, bytes)) => StreamReply::MediaChunk { total, bytes },
            Err(outcome) => refused(outcome),
        },
        FedBody::QueryDevices { users } if users.len() > MAX_USERS_PER_KEY_REQUEST => {
            refused(Outcome::Rejected(RejectCode::TooLarge))
        }
        FedBody::QueryDevices { users } => {
            match inbound.query_devices(peer.clone(), users.clone()).await {
                Ok(devices) => StreamReply::Devices(devices),
                Err(outcome) => refused(outcome),
            }
        }
        _ => refused(Outcome::Rejected(RejectCode::BadEvent)),
    }
}

/// Splits a stream into frames, takes the peer's budget for them and checks those admitted; one
/// verdict per frame (over-budget frames are answered `Retry(RateLimited)`).
fn check_stream(
    shared: &Shared,
    peer: &ServerName,
    bytes: &[u8],
) -> Result<Vec<Result<FedEnvelope, Outcome>>, StreamError> {
    let frames = split_frames(bytes)?;
    debug_assert!(frames.len() <= MAX_FRAMES_PER_STREAM);
    let granted = shared
        .budgets
        .lock()
        .expect("budget lock")
        .entry(peer.clone())
        .or_insert_with(|| Bucket::full(shared.config.envelopes, Instant::now()))
        .take_up_to(shared.config.envelopes, frames.len(), Instant::now());
    let admitted = granted.min(frames.len());
    let directory = shared.directory.read().expect("directory lock");
    let mut replay = shared.replay.lock().expect("replay lock");
    let mut verdicts: Vec<Result<FedEnvelope, Outcome>> = check_batch(
        &directory,
        &mut replay,
        shared.config.freshness,
        &shared.config.own,
        peer,
        &frames[..admitted],
        now_ms(),
    )
    .into_iter()
    .map(|verdict| verdict.map_err(Outcome::Rejected))
    .collect();
    verdicts.resize_with(frames.len(), || Err(Outcome::Retry(RetryCode::RateLimited)));
    Ok(verdicts)
}
