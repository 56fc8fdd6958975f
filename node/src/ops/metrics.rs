//! `GET /metrics` in the Prometheus text format, on its own listener (`metrics.listen`, off by
//! default): gauges read fresh from the hearth's state at each scrape, the process's CPU, memory
//! and file descriptors, and the counters and histograms the hot path records through the
//! `metrics` facade (send to accepted, group commit size and time, delivery, HTTP per route,
//! WebSocket frames, push attempts, federation envelopes). The recorder is installed once per
//! process, only when metrics are served (otherwise recording is a no-op).

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hearth_federation::{Directory, Swarm};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::federation::custody::Custody;
use crate::store::Store;

/// Upper bounds of the histogram buckets of every `*_seconds` metric: 100 µs to 10 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Upper bounds of the group commit size buckets (requests per commit).
const BATCH: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// The process's recorder of counters and histograms, installed on first use. Every hearth in
/// the process records into it (tests run several).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hearth_commit_batch_requests".into()),
                    BATCH,
                )
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; hot-path metrics go there");
        }
        // Histograms keep raw samples until upkeep folds them into buckets: run it even when
        // nobody scrapes, so memory stays bounded.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn the metrics upkeep thread");
        handle
    })
}

/// What the gauges are read from.
pub struct Source {
    pub store: Arc<Store>,
    pub custody: Arc<Custody>,
    pub directory: Arc<RwLock<Directory>>,
    pub swarm: Option<Swarm>,
    pub connections: hearth_client_api::server::Admissions,
    pub transport: hearth_federation::Transport,
    /// Key announcements from gossip, when the swarm runs.
    pub gossip: Option<Arc<hearth_federation::discovery::GossipTally>>,
}

/// A label value with `\` and `"` escaped, as the text format wants.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

impl Source {
    /// The whole exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let holdings = self.custody.holdings();
        let held = |f: fn(&hearth_federation::relay::Holding) -> u64| -> Vec<(String, u64)> {
            holdings
                .iter()
                .map(|(origin, h)| (format!("origin=\"{}\"", label(origin.as_str())), f(h)))
                .collect()
        };
        gauge(
            &mut out,
            "hearth_relay_held_envelopes",
            "Sealed envelopes this hearth holds for other hearths, per origin.",
            &held(|h| h.envelopes),
        );
        gauge(
            &mut out,
            "hearth_relay_held_bytes",
            "Bytes of sealed envelopes this hearth holds for other hearths, per origin.",
            &held(|h| h.bytes),
        );
        let queues = match self.store.outbox_depths() {
            Ok(queues) => queues
                .into_iter()
                .map(|(peer, n)| (format!("peer=\"{}\"", label(peer.as_str())), n))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the outbound queues");
                Vec::new()
            }
        };
        gauge(
            &mut out,
            "hearth_federation_queue_entries",
            "Entries waiting in the durable outbound queue, per destination (held envelopes included).",
            &queues,
        );
        let (configured, discovered) = {
            let directory = self.directory.read().expect("directory lock");
            let peers = directory.peers();
            let discovered = peers.iter().filter(|p| directory.is_discovered(p)).count() as u64;
            (peers.len() as u64 - discovered, discovered)
        };
        gauge(
            &mut out,
            "hearth_federation_peers",
            "Known peer hearths, configured or learnt from the DHT.",
            &[
                ("source=\"configured\"".into(), configured),
                ("source=\"discovered\"".into(), discovered),
            ],
        );
        let storage = self.store.condition();
        gauge(
            &mut out,
            "hearth_storage_writable",
            "1 while the store takes writes; 0 while free space is below storage.min_free_bytes or the database is being reopened after a failed write.",
            &[(String::new(), u64::from(storage.unwritable.is_none()))],
        );
        gauge(
            &mut out,
            "hearth_storage_free_bytes",
            "Free bytes on the data directory's file system (as of the last check, every 0.5 s).",
            &[(String::new(), storage.free_bytes)],
        );
        let connections = self.connections.counts();
        gauge(
            &mut out,
            "hearth_client_connections",
            "Client connections (HTTP and WebSocket) open now.",
            &[(String::new(), connections.open as u64)],
        );
        let _ = writeln!(
            out,
            "# HELP hearth_client_connections_admitted_total Client connections accepted.\n\
             # TYPE hearth_client_connections_admitted_total counter\n\
             hearth_client_connections_admitted_total {}\n\
             # HELP hearth_client_connections_refused_total Client connections closed at once because a cap was reached.\n\
             # TYPE hearth_client_connections_refused_total counter\n\
             hearth_client_connections_refused_total{{cap=\"total\"}} {}\n\
             hearth_client_connections_refused_total{{cap=\"per_ip\"}} {}",
            connections.admitted, connections.refused_full, connections.refused_address_full
        );
        if let Some(gossip) = &self.gossip {
            let (applied, not_applied) = gossip.counts();
            let _ = writeln!(
                out,
                "# HELP hearth_gossip_announcements_total Key announcements received by gossip: applied, or not (bad signature, stale, unknown origin, nothing new).\n\
                 # TYPE hearth_gossip_announcements_total counter\n\
                 hearth_gossip_announcements_total{{outcome=\"applied\"}} {applied}\n\
                 hearth_gossip_announcements_total{{outcome=\"not_applied\"}} {not_applied}"
            );
        }
        let connected = self.transport.connected_peers();
        let links: Vec<(String, u64)> = {
            let directory = self.directory.read().expect("directory lock");
            directory
                .peers()
                .iter()
                .map(|p| {
                    (
                        format!("peer=\"{}\"", label(p.as_str())),
                        u64::from(connected.contains(p)),
                    )
                })
                .collect()
        };
        gauge(
            &mut out,
            "hearth_federation_link_up",
            "1 while this hearth holds an open QUIC connection to the peer (it drops to 0 within federation.idle_timeout_ms of the peer dying).",
            &links,
        );
        if let Some(swarm) = &self.swarm {
            let status = swarm.snapshot();
            gauge(
                &mut out,
                "hearth_p2p_connected_peers",
                "Peers the libp2p swarm is connected to.",
                &[(String::new(), status.connected as u64)],
            );
            gauge(
                &mut out,
                "hearth_p2p_routing_table_peers",
                "Peers in the Kademlia routing table.",
                &[(String::new(), status.routing_table as u64)],
            );
            gauge(
                &mut out,
                "hearth_p2p_dht_records",
                "Hearth records this node stores for the DHT.",
                &[(String::new(), status.stored_records as u64)],
            );
        }
        process(&mut out);
        out.push_str(&recorder().render());
        out
    }
}

/// The process's CPU time, resident memory and file descriptors, from `/proc/self` (Linux).
fn process(out: &mut String) {
    // SAFETY: sysconf and getrlimit only read process-wide settings into values we own.
    #[allow(unsafe_code)]
    let (ticks, page, max_fds) = unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        let max_fds = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur
        } else {
            0
        };
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            max_fds,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) end with ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
        let cpu: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum::<f64>()
            / ticks;
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total CPU time the hearth used, user and system.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {cpu}"
        );
    }
    if let Some(resident) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory of the hearth process.",
            &[(String::new(), resident * page)],
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "File descriptors the hearth holds open.",
            &[(String::new(), fds.count() as u64)],
        );
    }
    gauge(
        out,
        "process_max_fds",
        "The hearth's limit of open file descriptors.",
        &[(String::new(), max_fds)],
    );
}

/// Serves `GET /metrics` on `listen` until the task is aborted.
pub async fn serve(
    listen: SocketAddr,
    source: Arc<Source>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move {
                let body = tokio::task::spawn_blocking(move || source.render())
                    .await
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(%bound, "metrics served at /metrics");
    Ok((bound, task))
}
