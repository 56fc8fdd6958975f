//! The WebSocket session of one device: inbox backlog, then live events; sends with acks.
//!
//! The session never holds events in memory for long: it is woken by a watch of the user's inbox
//! head and reads what is new from the store, so a slow or lagging device simply reads more at
//! once, and nothing is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hearth_spec::api::Sequenced;
use hearth_spec::client::{ClientFrame, ServerFrame};
use hearth_spec::{ErrorBody, ErrorCode, TxnId};
use serde::Deserialize;

use crate::api::{Api, too_large};
use crate::backend::{AuthedDevice, Backend, Taken};
use crate::rejection::{ApiError, ApiQuery};

/// Initial read buffer of a WebSocket.
const READ_BUFFER: usize = 4 * 1024;

/// Events read from the inbox per store read.
const SYNC_PAGE: usize = 256;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WsQuery {
    /// Start after this inbox cursor (default: the device's acknowledged cursor).
    since: Option<u64>,
    /// For clients that cannot set headers on a WebSocket request (browsers).
    access_token: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "sync",
    summary = "Open the WebSocket session (spec/client-protocol.md)",
    params(WsQuery),
    security(("bearer" = [])),
    responses((status = 101, description = "Switching to the WebSocket protocol."))
)]
pub(crate) async fn upgrade<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<WsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query.access_token.as_deref())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing access token"))?;
    let device = api.backend.authenticate(token)?;
    api.backend.seen(&device, peer.ip());
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParam,
            format!("not a WebSocket request: {e}"),
        )
    })?;
    let since = match query.since {
        Some(since) => since,
        None => api.backend.device_cursor(&device).await?,
    };
    // Refuse a cursor past the end of the inbox now, with an HTTP error, rather than after upgrade.
    api.backend.sync(&device, since, 1).await?;
    let limit = api.config.max_ws_message_bytes;
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        // The default 128 KiB read buffer per socket would dominate an idle connection's memory;
        // it grows for larger messages.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let span =
                tracing::info_span!("ws", user = %device.user_id, device = %device.device_id);
            let _enter = span.enter();
            Session::new(api, device, since).run(socket).await;
        })
        .into_response())
}

/// What an in-flight operation finished with.
enum Done {
    Sent(TxnId, Result<Sequenced, ErrorBody>),
    /// An ack, typing or read: only a failure is answered.
    Other(Result<(), ErrorBody>),
}

impl Done {
    /// The frame that answers it, if any (a successful ack, typing or read needs none).
    fn into_frame(self) -> Option<ServerFrame> {
        match self {
            Done::Sent(txn_id, Ok(s)) => Some(ServerFrame::Accepted {
                txn_id,
                room_id: s.room_id,
                event_id: s.event_id,
                seq: s.seq,
            }),
            Done::Sent(txn_id, Err(e)) => Some(error_frame(e, Some(txn_id))),
            Done::Other(Ok(())) => None,
            Done::Other(Err(e)) => Some(error_frame(e, None)),
        }
    }
}

type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

struct Session<B> {
    api: Arc<Api<B>>,
    device: AuthedDevice,
    cursor: u64,
}

/// Why a session ends.
enum End {
    ClientClosed,
    Transport,
    Revoked,
    Idle,
    BackendGone,
}

impl<B: Backend> Session<B> {
    fn new(api: Arc<Api<B>>, device: AuthedDevice, since: u64) -> Self {
        Self {
            api,
            device,
            cursor: since,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        // Subscribe before the first read so that nothing landing in between is missed.
        let mut sub = self.api.backend.subscribe(&self.device);
        // Connecting is using the device: it counts as a heartbeat.
        self.api.backend.heartbeat(&self.device);
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let mut check = tokio::time::interval(self.api.config.session_check_interval);
        let mut last_heard = Instant::now();
        let mut dirty = true;
        let mut synced = false;
        // When new inbox entries woke this session (to time their delivery).
        let mut woken: Option<Instant> = None;
        let _open = OpenConnection::new();
        let end = loop {
            if dirty {
                dirty = false;
                match self.drain_inbox(&mut sink).await {
                    Ok(()) => {}
                    Err(end) => break end,
                }
                if let Some(woken) = woken.take() {
                    metrics::histogram!("hearth_delivery_seconds").record(woken.elapsed());
                    crate::stage::record("deliver", woken.elapsed());
                }
                if !synced {
                    synced = true;
                    let mut frames = vec![ServerFrame::Synced {
                        cursor: self.cursor,
                    }];
                    frames.extend(self.api.backend.welcome(&self.device).await);
                    let mut failed = false;
                    for frame in &frames {
                        if send(&mut sink, frame).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        break End::Transport;
                    }
                }
            }
            let can_read = in_flight.len() < self.api.config.max_in_flight;
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(frame) = done.into_frame()
                        && send(&mut sink, &frame).await.is_err()
                    {
                        break End::Transport;
                    }
                }
                changed = sub.inbox.changed() => {
                    if changed.is_err() {
                        break End::BackendGone;
                    }
                    dirty = true;
                    if woken.is_none() {
                        crate::stage::record("wake", sub.inbox.borrow().landed.elapsed());
                        woken = Some(Instant::now());
                    }
                }
                signal = sub.signals.recv() => match signal {
                    Ok(text) => {
                        frames_out(1);
                        if sink.send(Message::Text(text.as_ref().into())).await.is_err() {
                            break End::Transport;
                        }
                    }
                    // Signals are ephemeral or queryable marks: a lagging device skips some.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break End::BackendGone,
                },
                message = stream.next(), if can_read => {
                    last_heard = Instant::now();
                    metrics::counter!("hearth_ws_frames_total", "direction" => "in").increment(1);
                    let reply = match message {
                        None | Some(Ok(Message::Close(_))) => break End::ClientClosed,
                        Some(Err(_)) => break End::Transport,
                        Some(Ok(Message::Text(text))) => self.handle(&text, &mut in_flight).await,
                        Some(Ok(Message::Binary(_))) => Some(error_frame(
                            ErrorBody::new(ErrorCode::BadJson, "frames are JSON text, not binary"),
                            None,
                        )),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    };
                    if let Some(frame) = reply
                        && send(&mut sink, &frame).await.is_err()
                    {
                        break End::Transport;
                    }
                }
                _ = check.tick() => {
                    if !self.api.backend.device_active(&self.device) {
                        let frame = error_frame(ErrorBody::new(ErrorCode::Unauthorized, "this device has been logged out"), None);
                        let _ = send(&mut sink, &frame).await;
                        break End::Revoked;
                    }
                    if last_heard.elapsed() > self.api.config.idle_timeout {
                        break End::Idle;
                    }
                }
            }
        };
        // Let sends already handed to the hearth finish; their acks may still reach the client.
        while let Some(done) = in_flight.next().await {
            if let Done::Sent(..) = done
                && let Some(frame) = done.into_frame()
                && send(&mut sink, &frame).await.is_err()
            {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let reason = match end {
            End::ClientClosed => "client closed",
            End::Transport => "transport error",
            End::Revoked => "device logged out",
            End::Idle => "idle",
            End::BackendGone => "hearth shutting down",
        };
        tracing::debug!(reason, "websocket session ended");
    }

    /// Sends every inbox entry after the cursor.
    async fn drain_inbox(
        &mut self,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    ) -> Result<(), End> {
        loop {
            let page = match self
                .api
                .backend
                .sync(&self.device, self.cursor, SYNC_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "inbox read failed");
                    let _ = send(sink, &error_frame(e, None)).await;
                    return Err(End::BackendGone);
                }
            };
            frames_out(page.items.len() as u64);
            for item in page.items {
                let frame = ServerFrame::Event {
                    cursor: item.cursor,
                    event: item.event,
                };
                let text = serde_json::to_string(&frame).expect("frames serialise");
                sink.feed(Message::Text(text.into()))
                    .await
                    .map_err(|_| End::Transport)?;
            }
            self.cursor = page.next_cursor;
            if !page.more {
                break;
            }
        }
        sink.flush().await.map_err(|_| End::Transport)
    }

    /// Handles one text frame; returns an immediate reply, if any. Sends, acknowledgements and
    /// read marks are taken into the hearth's write queue here, before the next frame is read,
    /// so they are applied in the order the device sent them; only their answers are awaited
    /// in `in_flight`, in any order.
    async fn handle(
        &mut self,
        text: &str,
        in_flight: &mut FuturesUnordered<InFlight>,
    ) -> Option<ServerFrame> {
        let read = Instant::now();
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                return Some(error_frame(
                    ErrorBody::new(ErrorCode::BadJson, format!("frame is not valid: {e}")),
                    None,
                ));
            }
        };
        match frame {
            ClientFrame::Send {
                room_id,
                txn_id,
                payload,
            } => {
                if payload.len() > self.api.config.max_event_bytes {
                    return Some(error_frame(
                        too_large(self.api.config.max_event_bytes),
                        Some(txn_id),
                    ));
                }
                if let Err(e) = self.api.send_limits.admit(&self.device) {
                    return Some(error_frame(e, Some(txn_id)));
                }
                crate::stage::record("receive", read.elapsed());
                let taken = self
                    .api
                    .backend
                    .take_send(&self.device, room_id, txn_id.clone(), payload)
                    .await;
                match taken {
                    Ok(sequenced) => {
                        in_flight
                            .push(Box::pin(async move { Done::Sent(txn_id, sequenced.await) }));
                        None
                    }
                    Err(e) => Some(error_frame(e, Some(txn_id))),
                }
            }
            ClientFrame::Ack { cursor } => {
                let taken = self.api.backend.take_ack(&self.device, cursor).await;
                answer_later(taken, in_flight)
            }
            ClientFrame::Read { room_id, seq } => {
                let taken = self.api.backend.take_read(&self.device, room_id, seq).await;
                answer_later(taken, in_flight)
            }
            ClientFrame::Typing { room_id, typing } => {
                if let Err(e) = self.api.request_limits.admit(&self.device) {
                    return Some(error_frame(e, None));
                }
                let api = self.api.clone();
                let device = self.device.clone();
                in_flight.push(Box::pin(async move {
                    Done::Other(api.backend.typing(&device, room_id, typing).await)
                }));
                None
            }
            ClientFrame::Heartbeat => match self.api.heartbeat_limits.admit(&self.device) {
                Ok(()) => {
                    self.api.backend.heartbeat(&self.device);
                    None
                }
                Err(e) => Some(error_frame(e, None)),
            },
            ClientFrame::Ping { nonce } => Some(ServerFrame::Pong { nonce }),
        }
    }
}

/// A taken write whose failure, once it is decided, is answered with an error frame; one that
/// could not be taken is answered now.
fn answer_later(
    taken: Result<Taken<()>, ErrorBody>,
    in_flight: &mut FuturesUnordered<InFlight>,
) -> Option<ServerFrame> {
    match taken {
        Ok(done) => {
            in_flight.push(Box::pin(async move { Done::Other(done.await) }));
            None
        }
        Err(e) => Some(error_frame(e, None)),
    }
}

fn error_frame(e: ErrorBody, txn_id: Option<TxnId>) -> ServerFrame {
    ServerFrame::Error {
        code: e.code,
        message: e.message,
        txn_id,
        retry_after_ms: e.retry_after_ms,
    }
}

/// Counts WebSocket frames sent to devices.
fn frames_out(n: u64) {
    metrics::counter!("hearth_ws_frames_total", "direction" => "out").increment(n);
}

/// Counts an open WebSocket session in `hearth_ws_connections` while it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        metrics::gauge!("hearth_ws_connections").increment(1.0);
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("hearth_ws_connections").decrement(1.0);
    }
}

async fn send(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    frame: &ServerFrame,
) -> Result<(), axum::Error> {
    frames_out(1);
    let text = serde_json::to_string(frame).expect("frames serialise");
    sink.send(Message::Text(text.into())).await
}
