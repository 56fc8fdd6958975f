//! `GET /metrics`: gauges in the Prometheus text format, on their own listener
//! (`metrics.listen`, off by default), read fresh from the hearth's state at each scrape.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hearth_federation::{Directory, Swarm};

use crate::federation::custody::Custody;
use crate::store::Store;

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
        out
    }
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
