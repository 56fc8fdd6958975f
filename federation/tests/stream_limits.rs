//! A batch stream that never ends, or carries more than the receiver takes, is refused whole
//! with its own code: two real transports over QUIC on loopback, the receiver's limits small.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hearth_crypto::ServerKey;
use hearth_federation::{Directory, Inbound, KeyRing, PeerConfig, Transport, TransportConfig};
use hearth_spec::ServerName;
use hearth_spec::federation::{FedEnvelope, Outcome, StreamError, StreamReply};

struct Sink;

impl Inbound for Sink {
    async fn receive(&self, _peer: ServerName, envelopes: Vec<FedEnvelope>) -> Vec<Outcome> {
        vec![Outcome::Stored; envelopes.len()]
    }
}

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

fn start(config: TransportConfig, key: &ServerKey) -> (Transport, Arc<RwLock<Directory>>) {
    let directory = Arc::new(RwLock::new(Directory::default()));
    let transport = Transport::start(
        config,
        Arc::new(KeyRing::single(Arc::new(
            ServerKey::from_bytes(&key.to_bytes()[..]).unwrap(),
        ))),
        directory.clone(),
        Arc::new(Sink),
    )
    .unwrap();
    (transport, directory)
}

fn knows(directory: &RwLock<Directory>, peer: &str, address: SocketAddr, key: &ServerKey) {
    *directory.write().unwrap() = Directory::new(
        vec![PeerConfig {
            name: name(peer),
            address,
            key: key.public_key(),
            previous_keys: vec![],
        }],
        vec![],
    );
}

const LIMIT: u32 = 64 * 1024;

/// The receiver a.test (a stream may take 300 ms and carry 64 KiB) and the sender b.test.
fn pair() -> (Transport, Transport) {
    let (a_key, b_key) = (ServerKey::generate(), ServerKey::generate());
    let mut a_config = TransportConfig::new(name("a.test"), "127.0.0.1:0".parse().unwrap());
    a_config.stream_timeout = Duration::from_millis(300);
    a_config.max_stream_bytes = LIMIT;
    let (a, a_directory) = start(a_config, &a_key);
    let (b, b_directory) = start(
        TransportConfig::new(name("b.test"), "127.0.0.1:0".parse().unwrap()),
        &b_key,
    );
    knows(&a_directory, "b.test", b.local_addr(), &b_key);
    knows(&b_directory, "a.test", a.local_addr(), &a_key);
    (a, b)
}

/// Opens a stream to a.test, writes `bytes` (finishing the stream if `finish`), and returns
/// a.test's answer.
async fn stream(b: &Transport, bytes: &[u8], finish: bool) -> StreamReply {
    let connection = b.connection(&name("a.test")).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // The receiver may refuse before it has read everything: a write it stopped is fine.
    if send.write_all(bytes).await.is_ok() && finish {
        let _ = send.finish();
    }
    let answer = tokio::time::timeout(Duration::from_secs(30), recv.read_to_end(1 << 20))
        .await
        .expect("a.test answers within 30 s")
        .unwrap();
    drop(send);
    StreamReply::decode(&answer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_ends_times_out_and_one_over_the_limit_is_too_large() {
    let (_a, b) = pair();
    let started = std::time::Instant::now();
    assert_eq!(
        stream(&b, &[0, 0, 0, 9, 1], false).await,
        StreamReply::Refused(StreamError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        stream(&b, &vec![0; LIMIT as usize + 1], true).await,
        StreamReply::Refused(StreamError::TooLarge)
    );
    // The connection serves the next stream as usual.
    assert_eq!(
        stream(&b, &[], true).await,
        StreamReply::Refused(StreamError::Empty)
    );
}
