//! The live WebSocket to the hearth.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hearth_spec::client::{ClientFrame, ServerFrame};
use hearth_spec::{ErrorBody, ErrorCode, RoomId, TxnId};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ClientError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame accepted from the hearth.
const MAX_INCOMING: usize = 16 * 1024 * 1024;

/// A live WebSocket session. [`Connection::split`] gives the writing half (sends, acks, pings)
/// and the reading half (frames in inbox order), to use from different tasks.
#[derive(Debug)]
pub struct Connection {
    sender: Sender,
    receiver: Receiver,
}

/// The writing half.
#[derive(Debug)]
pub struct Sender {
    sink: SplitSink<Ws, Message>,
}

/// The reading half.
#[derive(Debug)]
pub struct Receiver {
    stream: SplitStream<Ws>,
}

fn ws_error(e: tungstenite::Error) -> ClientError {
    ClientError::WebSocket(Box::new(e))
}

impl Connection {
    pub(crate) async fn open(
        base: &str,
        token: &str,
        since: Option<u64>,
    ) -> Result<Self, ClientError> {
        let ws_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        let mut url = format!("{ws_base}/v1/ws");
        if let Some(since) = since {
            url.push_str(&format!("?since={since}"));
        }
        let mut request = url.into_client_request().map_err(ws_error)?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(ClientError::BadToken)?;
        request.headers_mut().insert("authorization", value);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_INCOMING))
            .max_frame_size(Some(MAX_INCOMING));
        let (ws, _) =
            match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
                Ok(ok) => ok,
                Err(tungstenite::Error::Http(response)) => {
                    let status = response.status().as_u16();
                    let body = response
                        .body()
                        .as_deref()
                        .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                        .unwrap_or_else(|| {
                            ErrorBody::new(ErrorCode::Internal, format!("HTTP {status}"))
                        });
                    return Err(ClientError::Api { status, body });
                }
                Err(e) => return Err(ws_error(e)),
            };
        let (sink, stream) = ws.split();
        Ok(Self {
            sender: Sender { sink },
            receiver: Receiver { stream },
        })
    }

    /// Splits into halves for concurrent use.
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }
}

impl Sender {
    /// Sends a message.
    pub async fn send(
        &mut self,
        room: &RoomId,
        txn_id: &TxnId,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.frame(&ClientFrame::Send {
            room_id: room.clone(),
            txn_id: txn_id.clone(),
            payload: payload.to_vec(),
        })
        .await
    }

    /// Acknowledges the inbox up to `cursor`.
    pub async fn ack(&mut self, cursor: u64) -> Result<(), ClientError> {
        self.frame(&ClientFrame::Ack { cursor }).await
    }

    /// Sends any frame.
    pub async fn frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).expect("frames serialise");
        self.sink
            .send(Message::Text(text.into()))
            .await
            .map_err(ws_error)
    }

    /// Sends several frames in one write (pipelined sends reach the hearth together).
    pub async fn frames(&mut self, frames: &[ClientFrame]) -> Result<(), ClientError> {
        for frame in frames {
            let text = serde_json::to_string(frame).expect("frames serialise");
            self.sink
                .feed(Message::Text(text.into()))
                .await
                .map_err(ws_error)?;
        }
        self.sink.flush().await.map_err(ws_error)
    }

    /// Sends raw text, for tests of hostile input.
    pub async fn raw(&mut self, message: Message) -> Result<(), ClientError> {
        self.sink.send(message).await.map_err(ws_error)
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.sink.close().await;
    }
}

impl Receiver {
    /// The next frame from the hearth; `None` when the connection has closed.
    pub async fn next(&mut self) -> Option<Result<ServerFrame, ClientError>> {
        loop {
            let message = match self.stream.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(ws_error(e))),
            };
            match message {
                Message::Text(text) => {
                    return Some(serde_json::from_str(&text).map_err(ClientError::BadFrame));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }
}
