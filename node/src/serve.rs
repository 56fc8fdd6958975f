//! Starting and stopping a hearth.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hearth_client_api::ApiConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::accounts::{AccountError, Accounts};
use crate::chat::committer::{Committer, CommitterConfig};
use crate::chat::hub::Hub;
use crate::chat::live::Live;
use crate::config::Config;
use crate::federation::peer_signals::PeerSignals;
use crate::federation::rotation::KeyRotator;
use crate::federation::{Federation, FederationParts, Wakers};
use crate::ops::admin::Admin;
use crate::ops::data_dir::{admin_socket_path, db_path};
use crate::ops::keys::{self, KeyFileError};
use crate::service::{Hearth, Parts};
use crate::signals::push::Push;
use crate::store::{OpenError, Store, StoreError};

/// Why a hearth could not start. Printed with its causes (`{:#}`), so a variant that wraps
/// another error names what failed and lets the cause say why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] crate::ops::data_dir::DataDirError),
    #[error("cannot open the media directory {path}: {reason}")]
    Media {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("cannot open the database")]
    Open(#[from] OpenError),
    #[error("cannot load the sequencer state")]
    Store(#[from] StoreError),
    #[error("cannot load accounts")]
    Accounts(#[from] AccountError),
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        reason: std::io::Error,
    },
    #[error("invalid configuration")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start federation")]
    Federation(#[from] crate::federation::StartError),
    #[error("cannot build the peer directory")]
    Directory(#[from] crate::federation::DirectoryError),
    #[error("cannot finish an interrupted key rotation")]
    Rotation(#[from] crate::federation::rotation::RotateError),
    #[error("cannot open the admin socket {path}: {reason}")]
    AdminSocket {
        path: PathBuf,
        reason: std::io::Error,
    },
}

/// Binds, and lets go of, every address the hearth will listen on, so that a busy or forbidden
/// port is reported (with the system's reason) before anything is written to the data directory.
fn check_ports(config: &Config) -> Result<(), StartError> {
    let busy = |addr: SocketAddr, what: &'static str| {
        move |reason| StartError::Listen { addr, what, reason }
    };
    let api = config.client_api.listen;
    drop(std::net::TcpListener::bind(api).map_err(busy(api, "TCP, client API"))?);
    let federation = config.federation.listen;
    drop(std::net::UdpSocket::bind(federation).map_err(busy(federation, "UDP, federation"))?);
    if config.federation.discovery.enabled {
        let p2p = config.federation.discovery.listen_addr(federation);
        drop(std::net::UdpSocket::bind(p2p).map_err(busy(p2p, "UDP, peer discovery"))?);
    }
    if let Some(metrics) = config.metrics.listen {
        drop(std::net::TcpListener::bind(metrics).map_err(busy(metrics, "TCP, metrics"))?);
    }
    Ok(())
}

/// A running hearth.
pub struct Running {
    /// Where the client API listens (the real port when the config asked for port 0).
    pub client_addr: SocketAddr,
    pub hearth: Arc<Hearth>,
    /// Where peers reach this hearth (UDP).
    pub federation_addr: SocketAddr,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    metrics: Option<JoinHandle<()>>,
    federation: Option<Federation>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    admin: JoinHandle<()>,
    ticker: JoinHandle<()>,
    retention: JoinHandle<()>,
    hub: Arc<Hub>,
    store: Arc<Store>,
    committer_thread: Option<std::thread::JoinHandle<()>>,
    /// Changes the client API's rate limits (SIGHUP).
    limits: hearth_client_api::LimitReload,
}

/// Opens storage, loads or creates keys, and starts serving clients.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let dir = &config.data_dir;
    check_ports(&config)?;
    if config.metrics.listen.is_some() {
        // Recording starts with the hearth, before the first scrape.
        crate::ops::metrics::recorder();
    }
    crate::ops::data_dir::prepare(dir, config.storage.allow_shared_data_dir)?;
    let keys = Arc::new(crate::federation::rotation::load_key_ring(dir)?);
    let store = Arc::new(Store::open_with_cache(
        &db_path(dir),
        config.storage.cache_bytes,
    )?);
    store.set_checkpoint_bytes(config.storage.checkpoint_bytes);
    match store.write_journal_ahead(config.storage.min_free_bytes) {
        Ok(0) => {}
        Ok(bytes) => tracing::debug!(bytes, "wrote the commit journal ahead"),
        // The journal then grows as it is written, as before: slower, not wrong.
        Err(e) => tracing::warn!(error = %e, "could not write the commit journal ahead"),
    }
    crate::store::watch(&store, config.storage.min_free_bytes);
    let accounts = Arc::new(Accounts::new(
        store.clone(),
        keys.clone(),
        config.server_name.clone(),
        config.auth.clone(),
    )?);
    let hub = Arc::new(Hub::default());
    let vapid = Arc::new(keys::load_or_generate_vapid(&dir.join("vapid.key"))?);
    let push = Push::start(store.clone(), hub.clone(), config.push.clone(), vapid)?;
    let mut directory = crate::federation::directory(&config, store.as_ref())?;
    crate::federation::discovery::learn_kept(&mut directory, store.as_ref(), &config);
    let directory = Arc::new(std::sync::RwLock::new(directory));
    let peers = directory.read().expect("directory lock").peers();
    let wakers = Arc::new(Wakers::new(&peers));
    let (peer_signals, signal_queues) = PeerSignals::new(&peers);
    let live = Arc::new(Live::new(
        config.server_name.clone(),
        store.clone(),
        hub.clone(),
        peer_signals.clone(),
        &config.presence,
    ));
    let (committer, committer_thread) = Committer::start(
        store.clone(),
        hub.clone(),
        push.clone(),
        wakers.callback(),
        CommitterConfig {
            local: config.server_name.clone(),
            max_members: config.limits.max_room_members,
            max_batch: config.storage.max_batch,
            queue_depth: config.storage.queue_depth,
        },
    )?;
    let media = crate::chat::media::MediaStore::open(dir).map_err(|reason| StartError::Media {
        path: dir.join("media"),
        reason,
    })?;
    let media_for_admin = media.clone();
    let blocked = hearth_federation::Blocklist::new(
        store
            .blocked_hearths()?
            .into_iter()
            .map(|(server, _)| server),
    );
    let federation = Federation::start(
        &config,
        FederationParts {
            keys: keys.clone(),
            store: store.clone(),
            committer: committer.clone(),
            directory: directory.clone(),
            wakers,
            live: live.clone(),
            signals: signal_queues,
            peer_signals,
            media: media.clone(),
            blocked: blocked.clone(),
        },
    )?;
    let federation_addr = federation.transport.local_addr();
    let ticker = tokio::spawn(live.clone().run());
    let retention = tokio::spawn(crate::ops::retention::run(
        store.clone(),
        std::time::Duration::from_secs(config.storage.retention_interval_secs.max(1)),
    ));
    let hearth = Arc::new(Hearth::new(Parts {
        config: config.clone(),
        store: store.clone(),
        accounts: accounts.clone(),
        committer,
        hub: hub.clone(),
        live,
        push,
        directory: directory.clone(),
        discovery: federation.discovery(),
        peer_requests: federation.peer_requests(),
        media,
        transport: federation.transport(),
        blocked: blocked.clone(),
    }));
    let directory_for_admin = directory.clone();
    let directory_for_metrics = directory.clone();
    let rotator = KeyRotator {
        data_dir: dir.clone(),
        store: store.clone(),
        keys,
        peers: Arc::new(move || directory.read().expect("directory lock").peers()),
        hook: Some(federation.announcement_hook()),
    };
    if rotator.interrupted() {
        tracing::warn!("finishing a key rotation that was interrupted");
        rotator.rotate(crate::federation::rotation::DEFAULT_GRACE_MS)?;
    }
    let admin_path = admin_socket_path(dir);
    let admin_parts = Arc::new(Admin {
        store: store.clone(),
        media: media_for_admin,
        media_quota: config.limits.media_quota_bytes,
        accounts,
        rotator,
        custody: federation.custody(),
        directory: directory_for_admin,
        swarm: federation.discovery().map(|d| d.swarm().clone()),
        blocked: Some(blocked),
        rooms: Some({
            let weak = Arc::downgrade(&hearth);
            weak as std::sync::Weak<dyn crate::ops::admin::RoomActions>
        }),
    });
    hearth.set_admin(admin_parts.clone());
    let admin = crate::ops::admin::serve_socket(&admin_path, admin_parts)
        .await
        .map_err(|reason| StartError::AdminSocket {
            path: admin_path,
            reason,
        })?;

    let limits = server_limits(&config);
    let proxies =
        hearth_client_api::forwarded::TrustedProxies::parse(&config.client_api.trusted_proxies)
            .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?;
    let admissions = hearth_client_api::server::Admissions::new(
        limits.max_connections,
        limits.max_connections_per_ip,
    )
    .trusting(proxies);
    let metrics = match config.metrics.listen {
        Some(listen) => {
            let source = Arc::new(crate::ops::metrics::Source {
                store: store.clone(),
                custody: federation.custody(),
                directory: directory_for_metrics,
                swarm: federation.discovery().map(|d| d.swarm().clone()),
                connections: admissions.clone(),
                transport: federation.transport(),
                gossip: federation.discovery().map(|d| d.gossip_tally()),
            });
            let (bound, task) =
                crate::ops::metrics::serve(listen, source)
                    .await
                    .map_err(|reason| StartError::Listen {
                        addr: listen,
                        what: "TCP, metrics",
                        reason,
                    })?;
            Some((bound, task))
        }
        None => None,
    };
    let (metrics_addr, metrics) = metrics.unzip();
    let api_config = api_config(&config);
    let (app, rate_limits) = hearth_client_api::router(hearth.clone(), api_config);
    let addr = config.client_api.listen;
    let api_error = |reason| StartError::Listen {
        addr,
        what: "TCP, client API",
        reason,
    };
    let listener = listen(addr).map_err(api_error)?;
    let client_addr = listener.local_addr().map_err(api_error)?;
    hearth.set_listen_addr(client_addr);
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "client connection limits"
    );
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(hearth_client_api::server::serve(
        listener,
        app,
        limits,
        admissions,
        async move {
            let _ = stopped.await;
        },
    ));
    tracing::info!(server_name = %config.server_name, %client_addr, data_dir = %dir.display(), "hearth started");
    Ok(Running {
        client_addr,
        hearth,
        federation_addr,
        metrics_addr,
        metrics,
        federation: Some(federation),
        shutdown: Some(shutdown),
        server,
        admin,
        ticker,
        retention,
        hub,
        store,
        committer_thread: Some(committer_thread),
        limits: rate_limits,
    })
}

/// The client listener, with a backlog deep enough for a burst of connections to wait for accept
/// rather than be dropped by the kernel.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The client connection caps: `max_connections` 0 means the open-file limit less a reserve.
fn server_limits(config: &Config) -> hearth_client_api::server::ServerLimits {
    let c = &config.client_api;
    let max_connections = match c.max_connections {
        0 => {
            let files = open_file_limit();
            files.saturating_sub(1024).max(files / 2).max(1)
        }
        n => n,
    };
    hearth_client_api::server::ServerLimits {
        max_connections,
        max_connections_per_ip: c.max_connections_per_ip,
        header_timeout: Duration::from_millis(c.header_timeout_ms),
    }
}

/// This process's limit on open files (the `hearth` binary raises it to the hard limit first).
fn open_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit writes into a valid, initialised struct.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    }
}

fn api_config(config: &Config) -> ApiConfig {
    let l = &config.limits;
    ApiConfig {
        max_body_bytes: config.client_api.max_body_bytes,
        max_ws_message_bytes: config.client_api.max_ws_message_bytes,
        max_event_bytes: l.max_event_bytes,
        max_in_flight: config.client_api.max_in_flight_per_connection,
        sends: l.sends,
        requests: l.requests,
        auth: l.auth,
        login_per_account: l.login_per_account,
        heartbeats: l.heartbeats,
        key_claims: l.key_claims,
        max_media_bytes: l.max_media_bytes,
        body_timeout: Duration::from_millis(config.client_api.body_timeout_ms),
        ..ApiConfig::default()
    }
}

impl Running {
    /// Applies the rate limits of a reloaded configuration; connections carry on.
    pub fn reload_limits(&self, config: &Config) {
        self.limits.apply(&api_config(config));
    }

    /// The federation endpoint, while the hearth runs.
    pub fn federation_transport(&self) -> Option<hearth_federation::Transport> {
        self.federation.as_ref().map(|f| f.transport())
    }

    /// Stops accepting, ends live sessions, lets in-flight commits finish, and returns once the
    /// database is closed (so the same data directory can be opened again at once).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Ending the watches ends the WebSocket sessions, which graceful shutdown waits for.
        self.hub.close();
        if tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
            let _ = (&mut self.server).await;
        }
        self.admin.abort();
        let _ = (&mut self.admin).await;
        if let Some(metrics) = self.metrics.take() {
            metrics.abort();
            let _ = metrics.await;
        }
        self.ticker.abort();
        let _ = (&mut self.ticker).await;
        self.retention.abort();
        let _ = (&mut self.retention).await;
        if let Some(federation) = self.federation.take() {
            federation.stop().await;
        }
        let thread = self.committer_thread.take();
        // The committer stops when the last handle (inside the hearth) is dropped.
        drop(self.hearth);
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // Tasks that held the store (connections, admin requests) finish on their own shortly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.store) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.store) > 1 {
            tracing::error!("the database is still in use 10 s after shutdown");
        }
    }
}
