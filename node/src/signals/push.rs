//! Push notifications to devices without a live connection.
//!
//! The committer hands every inbox append to [`Push::enqueue`] (never blocking: a full queue
//! drops the notification, the event itself is safe in the inbox). A task coalesces bursts per
//! device (one notification per `coalesce_ms` window, carrying the latest event and the count),
//! skips devices that are online, and delivers with retries and exponential backoff with
//! jitter. An endpoint whose notifications keep failing is disabled, and the device is told when
//! it next connects. Notifications carry room, event id, sender and unread count: never content.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_spec::api::{PushNotification, PusherKind, PusherRequest};
use hearth_spec::{DeviceId, ErrorBody, ErrorCode, EventId, RoomId, ServerName, UserId};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use web_push_native::jwt_simple::algorithms::ES256KeyPair;
use web_push_native::{Auth, WebPushBuilder, p256};

use crate::chat::hub::Hub;
use crate::config::PushConfig;
use crate::ops::public_address::{PublicOnlyResolver, special_purpose};
use crate::store::Store;
use crate::store::tables::PusherRecord;

/// Jobs queued before new ones are dropped.
const QUEUE: usize = 65_536;
/// Deliveries in flight at once.
const CONCURRENT: usize = 64;

/// An event that landed in a user's inbox.
#[derive(Debug, Clone)]
pub struct PushJob {
    pub user: UserId,
    pub room: RoomId,
    pub seq: u64,
    pub event_id: EventId,
    pub sender: UserId,
}

/// Handle to the push task.
#[derive(Debug, Clone)]
pub struct Push {
    queue: mpsc::Sender<PushJob>,
    /// Users with at least one push endpoint: only their inbox appends are queued.
    users: Arc<std::sync::RwLock<std::collections::HashSet<UserId>>>,
    /// The VAPID public key Web Push subscriptions must be made with.
    vapid_public: String,
}

impl Push {
    /// Starts the push task (inside a tokio runtime).
    pub fn start(
        store: Arc<Store>,
        hub: Arc<Hub>,
        config: PushConfig,
        vapid: Arc<ES256KeyPair>,
    ) -> Result<Self, crate::store::StoreError> {
        let users = store.users_with_pushers()?.into_iter().collect();
        let (queue, rx) = mpsc::channel(QUEUE);
        let vapid_public = vapid_public_key(&vapid);
        tokio::spawn(run(rx, store, hub, config, vapid));
        Ok(Self {
            queue,
            vapid_public,
            users: Arc::new(std::sync::RwLock::new(users)),
        })
    }

    /// The VAPID public key (uncompressed P-256 point, base64url) for `pushManager.subscribe`.
    pub fn vapid_public_key(&self) -> &str {
        &self.vapid_public
    }

    /// Whether `user` has a push endpoint.
    pub fn wants(&self, user: &UserId) -> bool {
        self.users.read().expect("push users lock").contains(user)
    }

    /// Records that `user` has (or may no longer have) a push endpoint.
    pub fn set_wants(&self, user: &UserId, wants: bool) {
        let mut users = self.users.write().expect("push users lock");
        if wants {
            users.insert(user.clone());
        } else {
            users.remove(user);
        }
    }

    /// Queues a job without waiting; drops it (with a warning) if the queue is full.
    pub fn enqueue(&self, job: PushJob) {
        if self.queue.try_send(job).is_err() {
            tracing::warn!("push queue full; a notification was dropped");
        }
    }
}

struct Coalesced {
    job: PushJob,
    count: u64,
    due: Instant,
}

async fn run(
    mut rx: mpsc::Receiver<PushJob>,
    store: Arc<Store>,
    hub: Arc<Hub>,
    config: PushConfig,
    vapid: Arc<ES256KeyPair>,
) {
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve names where we cannot check them.
        .no_proxy();
    if !config.allow_private_endpoints {
        http = http.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    let http = http.build().expect("HTTP client");
    let allow_private = config.allow_private_endpoints;
    let failures: Arc<std::sync::Mutex<HashMap<(UserId, DeviceId), u32>>> = Default::default();
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    let mut pending: HashMap<(UserId, DeviceId), Coalesced> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let coalesce = Duration::from_millis(config.coalesce_ms);
    loop {
        tokio::select! {
            job = rx.recv() => {
                let Some(job) = job else { return };
                let pushers = match store.pushers_of(&job.user) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read pushers");
                        continue;
                    }
                };
                for (device, record) in pushers {
                    if record.disabled.is_some() || hub.is_online(&job.user, &device) {
                        continue;
                    }
                    pending
                        .entry((job.user.clone(), device))
                        .and_modify(|c| {
                            c.job = job.clone();
                            c.count += 1;
                        })
                        .or_insert_with(|| Coalesced { job: job.clone(), count: 1, due: Instant::now() + coalesce });
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let due: Vec<_> = pending.iter().filter(|(_, c)| c.due <= now).map(|(k, _)| k.clone()).collect();
                for key in due {
                    let Some(c) = pending.remove(&key) else { continue };
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let (store, hub, http, config, failures, vapid) = (store.clone(), hub.clone(), http.clone(), config.clone(), failures.clone(), vapid.clone());
                    tokio::spawn(async move {
                        let sender = Sender { http: &http, vapid: &vapid, subject: &config.vapid_subject, allow_private };
                        deliver(&store, &hub, &sender, &config, &failures, key, c).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

type Failures = std::sync::Mutex<HashMap<(UserId, DeviceId), u32>>;

/// What sending needs: the HTTP client and the VAPID identity.
struct Sender<'a> {
    http: &'a reqwest::Client,
    vapid: &'a ES256KeyPair,
    subject: &'a str,
    allow_private: bool,
}

async fn deliver(
    store: &Store,
    hub: &Hub,
    sender: &Sender<'_>,
    config: &PushConfig,
    failures: &Failures,
    (user, device): (UserId, DeviceId),
    c: Coalesced,
) {
    // It connected while the burst was being coalesced: it has the events already.
    if hub.is_online(&user, &device) {
        return;
    }
    let Ok(Some(record)) = store.pusher(&user, &device) else {
        return;
    };
    if record.disabled.is_some() {
        return;
    }
    let unread = store
        .read_mark(&user, &c.job.room)
        .and_then(|read| store.unread_messages(&c.job.room, &user, read))
        .unwrap_or(0);
    let notification = PushNotification {
        room_id: c.job.room.clone(),
        event_id: c.job.event_id,
        sender: c.job.sender.clone(),
        unread,
        count: c.count,
    };
    let mut last_error = String::new();
    for attempt in 0..config.attempts {
        if attempt > 0 {
            let base = config
                .retry_base_ms
                .saturating_mul(1 << (attempt - 1).min(16));
            let jitter = rand::thread_rng().gen_range(0..=base / 2);
            tokio::time::sleep(Duration::from_millis(base + jitter)).await;
        }
        let kind = match record.kind {
            PusherKind::WebPush => "web_push",
            PusherKind::Webhook => "webhook",
        };
        let sent = send(sender, &record, &notification).await;
        let outcome = if sent.is_ok() { "delivered" } else { "failed" };
        metrics::counter!("hearth_push_attempts_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        match sent {
            Ok(()) => {
                failures
                    .lock()
                    .expect("failures lock")
                    .remove(&(user, device));
                return;
            }
            Err(e) => last_error = with_causes(&e),
        }
    }
    let count = {
        let mut map = failures.lock().expect("failures lock");
        let n = map.entry((user.clone(), device.clone())).or_insert(0);
        *n += 1;
        *n
    };
    tracing::warn!(%user, %device, error = %last_error, failures = count, "push notification failed");
    if count >= config.disable_after_failures {
        let reason = format!("{count} notifications in a row failed; last error: {last_error}");
        let disabled = PusherRecord {
            disabled: Some(reason),
            disabled_reported: false,
            ..record
        };
        metrics::counter!("hearth_push_endpoints_disabled_total").increment(1);
        if let Err(e) = store.put_pusher(&user, &device, Some(&disabled)) {
            tracing::error!(error = %e, "cannot disable a failing pusher");
        }
        failures
            .lock()
            .expect("failures lock")
            .remove(&(user, device));
    }
}

/// Why one push was not delivered. Shown in logs and, once a pusher is disabled, to the device
/// (with its causes: reqwest's own message leaves out why a request failed).
#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error("bad endpoint: {0}")]
    BadUrl(#[from] url::ParseError),
    #[error("bad endpoint: {0}")]
    BadUri(#[from] axum::http::uri::InvalidUri),
    #[error("endpoint {host} is a {range} address")]
    SpecialAddress { host: String, range: &'static str },
    #[error("{0}")]
    Subscription(&'static str),
    #[error("keys must be base64url: {0}")]
    KeyEncoding(#[from] base64::DecodeError),
    #[error("p256dh is not a P-256 public key: {0}")]
    NotP256(#[from] p256::elliptic_curve::Error),
    #[error("the endpoint has no scheme or host")]
    NoOrigin,
    #[error("cannot sign the VAPID token: {0}")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot build the Web Push request: {0}")]
    WebPush(#[from] web_push_native::Error),
    #[error("a VAPID header that is not a header value")]
    Header(#[from] axum::http::header::InvalidHeaderValue),
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("endpoint answered HTTP {0}")]
    Status(u16),
}

async fn send(
    sender: &Sender<'_>,
    record: &PusherRecord,
    notification: &PushNotification,
) -> Result<(), PushError> {
    if !sender.allow_private {
        check_literal_host(&record.url)?;
    }
    let body = serde_json::to_vec(notification).expect("notifications serialise");
    let request = match record.kind {
        PusherKind::Webhook => sender
            .http
            .post(&record.url)
            .header("content-type", "application/json")
            .body(body)
            .build()?,
        PusherKind::WebPush => {
            let (public, auth) =
                subscription_keys(record.p256dh.as_deref(), record.auth.as_deref())?;
            let endpoint: axum::http::Uri = record.url.parse()?;
            let authorization = vapid_authorization(&endpoint, sender.vapid, sender.subject)?;
            let mut request = WebPushBuilder::new(endpoint, public, auth).build(body)?;
            request
                .headers_mut()
                .insert(axum::http::header::AUTHORIZATION, authorization.parse()?);
            reqwest::Request::try_from(request)?
        }
    };
    let response = sender.http.execute(request).await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(PushError::Status(response.status().as_u16()))
    }
}

/// An error and what caused it, as one line (reqwest's own message leaves out why a request
/// failed, e.g. that its name resolves to a loopback address).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = e.source();
    }
    text
}

/// The special-purpose range a URL host is in, judged from its text: an IP literal (bracketed or
/// not) or a `localhost` name. Other names are judged by what they resolve to, when a push is
/// sent (`PublicOnlyResolver`).
fn special_host(host: &str) -> Option<&'static str> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Some("loopback");
    }
    host.parse::<IpAddr>().ok().and_then(special_purpose)
}

/// A stored endpoint is held to the same rule when it is used (pushers stored before the rule
/// existed too).
fn check_literal_host(url: &str) -> Result<(), PushError> {
    let url = reqwest::Url::parse(url)?;
    let host = url.host_str().unwrap_or_default();
    match special_host(host) {
        Some(range) => Err(PushError::SpecialAddress {
            host: host.to_owned(),
            range,
        }),
        None => Ok(()),
    }
}

/// The subscription's P-256 public key and 16-byte auth secret, from base64url.
fn subscription_keys(
    p256dh: Option<&str>,
    auth: Option<&str>,
) -> Result<(p256::PublicKey, Auth), PushError> {
    use base64::Engine;
    let decode = |text: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
    };
    let p256dh = p256dh.ok_or(PushError::Subscription("p256dh is missing"))?;
    let public = p256::PublicKey::from_sec1_bytes(&decode(p256dh)?)?;
    let auth = decode(auth.ok_or(PushError::Subscription("auth is missing"))?)?;
    if auth.len() != 16 {
        return Err(PushError::Subscription("auth must be 16 bytes"));
    }
    Ok((public, Auth::clone_from_slice(&auth)))
}

/// The RFC 8292 `Authorization` header for a push to `endpoint`: a JWT for the endpoint's
/// origin, valid 12 hours. (web-push-native's own leaves a non-default port out of the
/// audience, which a push service on such a port refuses.)
fn vapid_authorization(
    endpoint: &axum::http::Uri,
    vapid: &ES256KeyPair,
    subject: &str,
) -> Result<String, PushError> {
    use web_push_native::jwt_simple::prelude::*;
    let origin = origin_of(endpoint).ok_or(PushError::NoOrigin)?;
    let claims = Claims::create(Duration::from_hours(12))
        .with_audience(origin)
        .with_subject(subject);
    let token = vapid.sign(claims).map_err(|e| PushError::Sign(e.into()))?;
    Ok(format!("vapid t={token}, k={}", vapid_public_key(vapid)))
}

/// A URL's origin as RFC 6454 writes it: scheme, host, and the port unless it is the scheme's
/// default.
fn origin_of(url: &axum::http::Uri) -> Option<String> {
    let origin = reqwest::Url::parse(&url.to_string()).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The VAPID public key clients pass to `pushManager.subscribe` (uncompressed point, base64url).
pub fn vapid_public_key(vapid: &ES256KeyPair) -> String {
    use base64::Engine;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = p256::PublicKey::from_sec1_bytes(&vapid.public_key().to_bytes())
        .expect("a key pair's public key is a valid point")
        .to_encoded_point(false);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(point.as_bytes())
}

/// Checks a push endpoint a device wants to register.
pub fn validate_pusher(
    req: &PusherRequest,
    config: &PushConfig,
    own_listen: SocketAddr,
    own_name: &ServerName,
) -> Result<(), ErrorBody> {
    let invalid = |msg: String| Err(ErrorBody::new(ErrorCode::InvalidParam, msg));
    if req.url.len() > 2048 {
        return invalid("the push URL is longer than 2048 bytes".into());
    }
    let Ok(url) = reqwest::Url::parse(&req.url) else {
        return invalid(format!("{:?} is not a URL", req.url));
    };
    if !matches!(url.scheme(), "http" | "https") {
        return invalid("the push URL must be http or https".into());
    }
    let Some(host) = url.host_str() else {
        return invalid("the push URL has no host".into());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or(0);
    let own_host = own_name.as_str().split(':').next().unwrap_or_default();
    let points_at_us = host == own_host
        || (port == own_listen.port()
            && (host == "localhost"
                || host.parse::<IpAddr>().is_ok_and(|ip| {
                    ip == own_listen.ip() || ip.is_loopback() || ip.is_unspecified()
                })));
    if points_at_us {
        return invalid("the push URL points at this hearth itself".into());
    }
    if !config.allow_private_endpoints {
        // Names are checked again, by what they resolve to, every time a push is sent.
        if let Some(range) = special_host(&host) {
            return invalid(format!(
                "push URLs must be on the public internet; {host} is a {range} address"
            ));
        }
    }
    if req.kind == PusherKind::WebPush
        && let Err(e) = subscription_keys(req.p256dh.as_deref(), req.auth.as_deref())
    {
        return invalid(format!("invalid Web Push subscription: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_origin_keeps_a_port_that_is_not_the_default() {
        let origin = |url: &str| origin_of(&url.parse().unwrap()).unwrap();
        assert_eq!(
            origin("https://push.example.net/x/y"),
            "https://push.example.net"
        );
        assert_eq!(
            origin("https://push.example.net:443/x"),
            "https://push.example.net"
        );
        assert_eq!(
            origin("https://push.example.net:8443/x"),
            "https://push.example.net:8443"
        );
        assert_eq!(
            origin("http://127.0.0.1:43939/wpush"),
            "http://127.0.0.1:43939"
        );
        assert_eq!(origin("http://[::1]:80/p"), "http://[::1]");
    }

    fn req(url: &str) -> PusherRequest {
        PusherRequest {
            kind: PusherKind::Webhook,
            url: url.into(),
            p256dh: None,
            auth: None,
        }
    }

    #[test]
    fn endpoints_are_checked() {
        let config = PushConfig::default();
        let listen: SocketAddr = "127.0.0.1:8008".parse().unwrap();
        let name = ServerName::parse("chat.example.org").unwrap();
        let check = |url: &str| validate_pusher(&req(url), &config, listen, &name);
        assert!(check("https://push.example.net/up/123").is_ok());
        for bad in [
            "ftp://push.example.net/x",
            "not a url",
            "https://chat.example.org/hook",
            "http://127.0.0.1:8008/v1/rooms",
            "http://localhost:8008/",
            "http://10.0.0.5/hook",
            "http://[::1]:9000/hook",
            "http://192.168.1.1/",
            "http://[::ffff:127.0.0.1]:9999/x",
            "http://[::ffff:7f00:1]:9999/x",
            "http://[0:0:0:0:0:ffff:127.0.0.1]:9999/x",
            "http://[64:ff9b::7f00:1]/x",
            "http://[2002:7f00:1::]/x",
            "http://[fe80::1]/x",
            "http://100.64.0.1/x",
            "http://224.0.0.1/x",
            "http://255.255.255.255/x",
            "http://0x7f000001/x",
            "http://2130706433/x",
            "http://127.1/x",
            "http://foo.localhost/x",
            "http://localhost./x",
        ] {
            assert!(check(bad).is_err(), "{bad} accepted");
        }
        let open = PushConfig {
            allow_private_endpoints: true,
            ..PushConfig::default()
        };
        assert!(validate_pusher(&req("http://127.0.0.1:9000/hook"), &open, listen, &name).is_ok());
        assert!(validate_pusher(&req("http://127.0.0.1:8008/hook"), &open, listen, &name).is_err());
    }

    #[test]
    fn stored_pushers_on_special_addresses_are_not_called() {
        assert!(check_literal_host("http://[::ffff:127.0.0.1]:9999/x").is_err());
        assert!(check_literal_host("http://10.0.0.1/x").is_err());
        assert!(check_literal_host("https://push.example.net/x").is_ok());
        assert!(check_literal_host("https://8.8.8.8/x").is_ok());
    }
}
