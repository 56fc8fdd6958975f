//! End-to-end encryption costs: MLS messages per second on one core, the commit that adds one
//! device to a group of 100 members with 2 devices each, and delivery latency through a real
//! hearth with encryption on next to the same run without it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearth_client::e2ee::{MAX_UNCONFIRMED, Mls, PreparedCommit, Received};
use hearth_client::{Client, SecureClient, new_txn_id};
use hearth_spec::client::ServerFrame;
use hearth_spec::e2ee::ChatBody;
use hearth_spec::{Content, DeviceId, EventId, EventView, RoomId, RoomKind, TxnId, UserId};

use crate::server::Hearth;
use crate::stats::Samples;
use crate::{Report, Target, accepted, stamp, synced};

fn user(name: &str) -> UserId {
    UserId::parse(&format!("@{name}:bench.local")).expect("valid user id")
}

fn device(name: &str) -> DeviceId {
    DeviceId::parse(name).expect("valid device id")
}

fn room() -> RoomId {
    RoomId::parse("!bench:bench.local").expect("valid room id")
}

/// An event of the bench's room as the home would sequence it.
fn event(seq: u64, from: &Mls, content: Content) -> EventView {
    event_in(&room(), seq, from, content)
}

/// An event of `room` as the home would sequence it.
fn event_in(room: &RoomId, seq: u64, from: &Mls, content: Content) -> EventView {
    let (sender, sender_device) = from.identity();
    EventView {
        room_id: room.clone(),
        seq,
        event_id: EventId::of_bytes(&seq.to_be_bytes()),
        sender: sender.clone(),
        sender_device: sender_device.clone(),
        txn_id: TxnId::parse(&format!("t{seq}")).expect("valid txn"),
        origin_ts: 0,
        time_id: hearth_spec::TimeId::of(0, &EventId::of_bytes(&seq.to_be_bytes())),
        content,
    }
}

/// The event of `prepared`, a commit in `room`, as the home would sequence it.
fn commit_event(room: &RoomId, seq: u64, from: &Mls, prepared: &PreparedCommit) -> EventView {
    event_in(
        room,
        seq,
        from,
        Content::Commit {
            epoch: prepared.epoch,
            commit: prepared.commit.clone(),
            welcome: prepared.welcome.clone(),
        },
    )
}

/// A key package of `joiner`, checked by `adder`.
fn package(joiner: &mut Mls, adder: &Mls) -> anyhow::Result<openmls::prelude::KeyPackage> {
    let bytes = joiner.key_packages(1, false)?.remove(0);
    let (u, d) = joiner.identity();
    Ok(adder
        .check_key_packages(&[(u.clone(), d.clone(), bytes)])?
        .remove(0))
}

/// The message the crypto figures send: 100 bytes of text.
fn hundred_bytes() -> ChatBody {
    ChatBody {
        text: "x".repeat(100),
        attachment: None,
    }
}

/// Messages each of the other rooms has read before the timed loop of the third figure.
const HISTORY_PER_ROOM: u64 = 1_000;

/// Two devices in one group: one encrypts `messages` messages, the other decrypts them, on this
/// thread. Once with state in memory (the MLS work alone), once saved to disk after every
/// operation as the SDK does (the receiver also confirming each message kept, as an app does,
/// and the sender taking its echo and confirming that), and once more so after both have read
/// [`HISTORY_PER_ROOM`] messages in each of `rooms` other rooms (a save must not cost more for
/// a device with history).
pub fn crypto(messages: usize, rooms: usize) -> anyhow::Result<Report> {
    let in_memory = crypto_once(messages, None, 0)?;
    let dir = tempfile::tempdir()?;
    let on_disk = crypto_once(messages / 10, Some(&dir.path().join("new")), 0)?;
    let with_history = crypto_once(messages / 10, Some(&dir.path().join("history")), rooms)?;
    let catching_up = catch_up(messages / 4, &dir.path().join("catch-up"))?;
    // The reader of the third figure opening again, as a command-line client does per command.
    let opening = Instant::now();
    let reader = hearth_client::e2ee::open(
        &dir.path().join("history").join("b"),
        &user("bob"),
        &device("B"),
    )?;
    let open_ms = opening.elapsed().as_secs_f64() * 1e3;
    let (snapshot, journal) = reader.saved_sizes().unwrap_or_default();
    Ok(Report {
        name: "MLS messages (encrypt + decrypt, one core)",
        figures: vec![
            ("in memory", in_memory, "msg/s", None),
            ("state saved each step", on_disk, "msg/s", None),
            (
                "state saved each step, other rooms' history held",
                with_history,
                "msg/s",
                None,
            ),
            (
                "a catch-up read before the app confirms any",
                catching_up,
                "msg/s",
                None,
            ),
            ("opening the device with that history", open_ms, "ms", None),
            (
                "its state on disk after opening: snapshot",
                snapshot as f64 / 1024.0,
                "KiB",
                None,
            ),
            ("… and journal", journal as f64 / 1024.0, "KiB", None),
        ],
    })
}

/// alice and bob in a new group `room`, bob having joined from alice's Welcome and both having
/// taken its commit.
fn pair_up(alice: &mut Mls, bob: &mut Mls, room: &RoomId) -> anyhow::Result<()> {
    alice.create_group(room)?;
    let add = alice.prepare_add(room, &[package(bob, alice)?])?;
    alice.commit_accepted(room)?;
    let commit = commit_event(room, 1, alice, &add);
    bob.receive(&commit)?;
    alice.receive(&commit)?;
    Ok(())
}

/// One message of alice's in `room` at `seq`, read by bob as an app does (decrypted, then
/// confirmed kept), and its echo taken and confirmed by alice.
fn one_message(
    alice: &mut Mls,
    bob: &mut Mls,
    room: &RoomId,
    seq: u64,
    body: &ChatBody,
) -> anyhow::Result<()> {
    let ciphertext = alice.encrypt(room, &format!("t{seq}"), body)?;
    let sent = event_in(
        room,
        seq,
        alice,
        Content::Message {
            payload: ciphertext,
        },
    );
    let got = bob.receive(&sent)?;
    if !matches!(got, Received::Message { .. }) {
        bail!("message {seq} of {room} did not decrypt: {got:?}");
    }
    // As an app does once it has stored the message (a save when the state is on disk).
    bob.kept(&[got])?;
    let echo = alice.receive(&sent)?;
    alice.kept(&[echo])?;
    Ok(())
}

fn crypto_once(
    messages: usize,
    dir: Option<&std::path::Path>,
    rooms: usize,
) -> anyhow::Result<f64> {
    let (mut alice, mut bob) = match dir {
        Some(dir) => (
            hearth_client::e2ee::open(&dir.join("a"), &user("alice"), &device("A"))?,
            hearth_client::e2ee::open(&dir.join("b"), &user("bob"), &device("B"))?,
        ),
        None => (
            Mls::in_memory(&user("alice"), &device("A"))?,
            Mls::in_memory(&user("bob"), &device("B"))?,
        ),
    };
    let body = hundred_bytes();
    for r in 0..rooms {
        let other = RoomId::parse(&format!("!history{r}:bench.local")).expect("valid room id");
        pair_up(&mut alice, &mut bob, &other)?;
        for seq in 2..2 + HISTORY_PER_ROOM {
            one_message(&mut alice, &mut bob, &other, seq, &body)?;
        }
    }
    pair_up(&mut alice, &mut bob, &room())?;
    let cpu = cpu_seconds();
    for i in 0..messages {
        one_message(&mut alice, &mut bob, &room(), 2 + i as u64, &body)?;
    }
    Ok(messages as f64 / (cpu_seconds() - cpu))
}

/// A device back online reads `messages` messages waiting for it (each decrypted and saved, as a
/// sync does), then the app confirms them all: messages per CPU-second of the reader.
fn catch_up(messages: usize, dir: &std::path::Path) -> anyhow::Result<f64> {
    let mut alice = Mls::in_memory(&user("alice"), &device("A"))?;
    let mut bob = hearth_client::e2ee::open(&dir.join("b"), &user("bob"), &device("B"))?;
    pair_up(&mut alice, &mut bob, &room())?;
    let body = hundred_bytes();
    let waiting = (0..messages)
        .map(|i| {
            let seq = 2 + i as u64;
            let payload = alice.encrypt(&room(), &format!("t{seq}"), &body)?;
            Ok(event(seq, &alice, Content::Message { payload }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpu = cpu_seconds();
    for event in &waiting {
        bob.receive(event)?;
    }
    bob.flush()?;
    let read = bob.unconfirmed();
    // Past the cap the oldest unconfirmed go (the app had each from `receive`).
    if read.len() != messages.min(MAX_UNCONFIRMED) {
        bail!("{} of {messages} messages read", read.len());
    }
    bob.kept(&read)?;
    bob.flush()?;
    Ok(messages as f64 / (cpu_seconds() - cpu))
}

/// CPU seconds this thread has used (so the figure is per core, not per wall-clock second).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A group of `members` users with `devices` devices each; then one more device is added. The
/// time to make that commit, its size and its Welcome's, and the time for a member to process
/// it and for the new device to join.
pub fn commit_cost(members: usize, devices: usize) -> anyhow::Result<Report> {
    let mut creator = Mls::in_memory(&user("u0"), &device("D0"))?;
    creator.create_group(&room())?;
    let mut others = Vec::new();
    for u in 0..members {
        for d in 0..devices {
            if u == 0 && d == 0 {
                continue;
            }
            others.push(Mls::in_memory(
                &user(&format!("u{u}")),
                &device(&format!("D{d}")),
            )?);
        }
    }
    let mut packages = Vec::new();
    for other in others.iter_mut() {
        packages.push(package(other, &creator)?);
    }
    let everyone = creator.prepare_add(&room(), &packages)?;
    creator.commit_accepted(&room())?;
    let mut member = others.swap_remove(0);
    if !matches!(
        member.receive(&commit_event(&room(), 1, &creator, &everyone))?,
        Received::Joined { .. }
    ) {
        bail!("a member did not join");
    }
    let in_group = creator.members(&room()).len();
    let mut newcomer = Mls::in_memory(&user("u0"), &device("NEW"))?;
    let new_package = package(&mut newcomer, &creator)?;

    let started = Instant::now();
    let add = creator.prepare_add(&room(), &[new_package])?;
    let make_ms = started.elapsed().as_secs_f64() * 1e3;
    creator.commit_accepted(&room())?;
    let event = commit_event(&room(), 2, &creator, &add);
    let started = Instant::now();
    member.receive(&event)?;
    let process_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    if !matches!(newcomer.receive(&event)?, Received::Joined { .. }) {
        bail!("the new device did not join");
    }
    let join_ms = started.elapsed().as_secs_f64() * 1e3;
    if member.epoch_authenticator(&room()) != newcomer.epoch_authenticator(&room()) {
        bail!("the new device is in another epoch");
    }
    Ok(Report {
        name: "commit adding one device",
        figures: vec![
            ("group devices", in_group as f64, "", None),
            ("make", make_ms, "ms", None),
            ("commit", add.commit.len() as f64, "B", None),
            (
                "welcome",
                add.welcome.as_ref().map_or(0, Vec::len) as f64,
                "B",
                None,
            ),
            ("member applies", process_ms, "ms", None),
            ("new device joins", join_ms, "ms", None),
        ],
    })
}

/// Delivery latency through a real hearth: `pairs` direct chats, `rate` messages per second
/// over WebSockets, from the sender's send to the recipient having the plaintext (which it then
/// confirms kept, as an app does, a save of its own). Plain and encrypted phases run back to back
/// on the same hearth and users.
pub async fn latency(
    hearth: &Hearth,
    rate: u64,
    seconds: u64,
    pairs: usize,
) -> anyhow::Result<Report> {
    let states = tempfile::tempdir()?;
    let mut chats = Vec::new();
    for i in 0..pairs {
        let a = hearth.user(&format!("ea{i}")).await?;
        let b = hearth.user(&format!("eb{i}")).await?;
        let bob_id = b.user_id()?.clone();
        let mut a = SecureClient::open(a, &states.path().join(format!("a{i}"))).await?;
        let mut b = SecureClient::open(b, &states.path().join(format!("b{i}"))).await?;
        let room = a
            .create_room(RoomKind::Direct, None, std::slice::from_ref(&bob_id))
            .await?
            .room_id;
        b.sync().await?;
        if !b.mls().in_group(&room) {
            bail!("the recipient did not join the group");
        }
        chats.push((a, b, room));
    }
    let (plain, _) = phase(&mut chats, rate, seconds, false).await?;
    let (encrypted, stages) = phase(&mut chats, rate, seconds, true).await?;
    Ok(Report {
        name: "1:1 delivery latency, plain vs end-to-end encrypted",
        figures: vec![
            ("rate", rate as f64, "msg/s", None),
            ("plain p50", plain.0, "ms", None),
            ("plain p99", plain.1, "ms", None),
            ("encrypted p50", encrypted.0, "ms", None),
            (
                "encrypted p99",
                encrypted.1,
                "ms",
                Some(Target::AtMost(1000.0)),
            ),
            // Issue 19: encryption may at most double the tail of the same run.
            (
                "encrypted p99 / plain p99",
                encrypted.1 / plain.1,
                "×",
                Some(Target::AtMost(2.0)),
            ),
            // Where the difference goes, on each message's path.
            (
                "sender's encrypt and save p50",
                stages.encrypt.0,
                "ms",
                None,
            ),
            (
                "sender's encrypt and save p99",
                stages.encrypt.1,
                "ms",
                None,
            ),
            (
                "recipient's decrypt and save p50",
                stages.take.0,
                "ms",
                None,
            ),
            (
                "recipient's decrypt and save p99",
                stages.take.1,
                "ms",
                None,
            ),
        ],
    })
}

/// (p50, p99) in ms of the two steps encryption adds to a message's path.
struct Stages {
    /// The sender's `encrypt`: the MLS work and the state's save, flushed before it returns.
    encrypt: (f64, f64),
    /// The recipient's `take`: the MLS work and the state's save (not flushed).
    take: (f64, f64),
}

/// The samples of one phase, in nanoseconds.
#[derive(Default)]
struct PhaseSamples {
    delivery: Samples,
    encrypt: Samples,
    take: Samples,
}

/// One phase: delivery (p50, p99) in ms, and the steps encryption added.
async fn phase(
    chats: &mut Vec<(SecureClient, SecureClient, RoomId)>,
    rate: u64,
    seconds: u64,
    encrypted: bool,
) -> anyhow::Result<((f64, f64), Stages)> {
    let samples = Arc::new(PhaseSamples::default());
    let per_pair = (rate * seconds) as usize / chats.len();
    let interval = Duration::from_nanos(1_000_000_000 * chats.len() as u64 / rate);
    let mut tasks = Vec::new();
    let pairs = chats.len() as u32;
    for (i, (a, b, room)) in std::mem::take(chats).into_iter().enumerate() {
        // Spread over the interval: `rate` messages a second, evenly, not `pairs` at once.
        let offset = interval * i as u32 / pairs;
        let samples = samples.clone();
        tasks.push(tokio::spawn(pair(
            a, b, room, per_pair, interval, offset, encrypted, samples,
        )));
    }
    for task in tasks {
        chats.push(task.await.context("pair task")??);
    }
    let expected = per_pair * chats.len();
    if samples.delivery.len() < expected {
        bail!(
            "only {} of {expected} messages arrived",
            samples.delivery.len()
        );
    }
    let stages = Stages {
        encrypt: samples.encrypt.percentiles_ms(),
        take: samples.take.percentiles_ms(),
    };
    Ok((samples.delivery.percentiles_ms(), stages))
}

/// One chat: the sender sends `count` stamped messages at `interval`; the recipient reads
/// (and decrypts) them and records the delay. Returns the clients for the next phase.
#[allow(clippy::too_many_arguments)]
async fn pair(
    mut a: SecureClient,
    mut b: SecureClient,
    room: RoomId,
    count: usize,
    interval: Duration,
    offset: Duration,
    encrypted: bool,
    samples: Arc<PhaseSamples>,
) -> anyhow::Result<(SecureClient, SecureClient, RoomId)> {
    // As an app does after a sync: its flush before it acknowledges, where a due rewrite of the
    // device state is made (not in the next message's path).
    b.sync().await?;
    // The plain phase's messages were read without the device: the device takes them here, as
    // an app would have as they came, not in the encrypted phase's first message (whose `take`
    // would otherwise fetch and process them, 1% of the phase's samples).
    b.catch_up(&room).await?;
    b.take_unreported();
    on_own_thread(|| b.mls_mut().flush())?;
    let since = b.mls().cursor();
    let (_b_tx, mut b_rx) = b.client().connect(Some(since)).await?.split();
    let (mut a_tx, mut a_rx) = synced(a.client()).await?;
    let sender_samples = samples.clone();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        let mut last_cursor = 0;
        while got < count {
            let frame = tokio::time::timeout(Duration::from_secs(30), b_rx.next())
                .await
                .context("no message for 30 s")?
                .context("closed")??;
            let ServerFrame::Event { cursor, event } = frame else {
                continue;
            };
            let sent = if encrypted {
                let taking = Instant::now();
                let received = b.take(&event).await?;
                let took = taking.elapsed().as_nanos() as u64;
                let sent = match &received {
                    Received::Message { body, .. } => body.text.parse::<u64>().ok(),
                    _ => None,
                };
                if let Some(sent) = sent {
                    samples.delivery.push(stamp().saturating_sub(sent));
                    samples.take.push(took);
                    got += 1;
                }
                // As an app does once it has stored the message: a save of its own, then a
                // flush before it acknowledges the cursor (which this bench does not send).
                on_own_thread(|| {
                    b.mls_mut().kept(&[received])?;
                    b.mls_mut().flush()
                })?;
                continue;
            } else {
                // The plain phase saves nothing per message; the cursor is saved at the end.
                last_cursor = cursor;
                match &event.content {
                    Content::Message { payload } if payload.len() == 8 => Some(u64::from_be_bytes(
                        payload[..8].try_into().expect("8 bytes"),
                    )),
                    _ => None,
                }
            };
            if let Some(sent) = sent {
                samples.delivery.push(stamp().saturating_sub(sent));
                got += 1;
            }
        }
        if last_cursor > 0 {
            b.mls_mut().set_cursor(last_cursor)?;
        }
        anyhow::Ok(b)
    });
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    for _ in 0..count {
        tick.tick().await;
        let txn = new_txn_id();
        let now = stamp();
        let payload = if encrypted {
            let body = ChatBody {
                text: now.to_string(),
                attachment: None,
            };
            let encrypting = Instant::now();
            let ciphertext = on_own_thread(|| a.mls_mut().encrypt(&room, txn.as_str(), &body))?;
            sender_samples
                .encrypt
                .push(encrypting.elapsed().as_nanos() as u64);
            ciphertext
        } else {
            now.to_be_bytes().to_vec()
        };
        a_tx.send(&room, &txn, &payload).await?;
        // As the SDK's sends do (in both phases alike): the hearth's answer, then, encrypted,
        // the flush that makes the step durable (and the state's rewrite, when due).
        accepted(&mut a_rx, &txn).await?;
        if encrypted {
            on_own_thread(|| a.mls_mut().flush())?;
        }
    }
    let b = reader.await.context("reader")??;
    a.sync().await?;
    on_own_thread(|| a.mls_mut().flush())?;
    Ok((a, b, room))
}

/// Medians over 21 rounds of what every send pays to check the room's devices (`converge` with
/// nothing to change) and of a whole `send_text` including that check, in ms.
async fn send_costs(client: &mut SecureClient, room: &RoomId) -> anyhow::Result<(f64, f64)> {
    let (mut checks, mut sends) = (Vec::new(), Vec::new());
    for i in 0..21 {
        let started = Instant::now();
        let outcome = client.converge(room).await?;
        checks.push(started.elapsed().as_secs_f64() * 1000.0);
        if outcome.added + outcome.removed > 0 {
            bail!("the room changed while measuring: {outcome:?}");
        }
        let started = Instant::now();
        client.send_text(room, &format!("cost {i}")).await?;
        sends.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(&mut checks), median(&mut sends)))
}

/// Runs a device's blocking disk work (its state's fsync) without holding one of the runtime's
/// threads: the bench's 20 devices share two of them, where each would have its own machine, and
/// one device's fsync would otherwise stall the others' reading and sending.
fn on_own_thread<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Big encrypted groups and new devices through a real hearth: the time from creating a group
/// of `members` (each with one device and its key packages waiting) to its last member reading
/// the first message, and the time from a new device's login to it reading its first message in
/// each of `rooms` existing rooms (whose other member sends, converging first, as every send
/// does).
pub async fn membership(hearth: &Hearth, members: usize, rooms: usize) -> anyhow::Result<Report> {
    let states = tempfile::tempdir()?;
    let mut sessions = Vec::new();
    for chunk in (0..members - 1).collect::<Vec<_>>().chunks(16) {
        let opened = futures_util::future::try_join_all(chunk.iter().map(|i| {
            let dir = states.path().join(format!("g{i}"));
            async move {
                let client = hearth.user(&format!("g{i}")).await?;
                let session = client.session().context("session")?.clone();
                drop(SecureClient::open(client, &dir).await?);
                anyhow::Ok((dir, session))
            }
        }))
        .await?;
        sessions.extend(opened);
    }
    let owner = hearth.user("gowner").await?;
    let mut owner = SecureClient::open(owner, &states.path().join("gowner")).await?;
    let ids: Vec<UserId> = sessions.iter().map(|(_, s)| s.user_id.clone()).collect();
    let started = Instant::now();
    let room = owner
        .create_room(RoomKind::Group, Some("big"), &ids)
        .await?
        .room_id;
    owner.send_text(&room, "first").await?;
    let (dir, session) = sessions.last().context("members")?.clone();
    let mut last = SecureClient::open(Client::with_session(&hearth.url, session), &dir).await?;
    let got = last.sync().await?;
    let read = got
        .iter()
        .any(|r| matches!(r, Received::Message { body, .. } if body.text == "first"));
    if !read {
        bail!("the last member did not read the first message");
    }
    let group_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (group_check_ms, group_send_ms) = send_costs(&mut owner, &room).await?;

    // A user in `rooms` chats logs in on a new device; each chat's other member sends.
    let user = hearth.user("gnew").await?;
    let mut first = SecureClient::open(user, &states.path().join("gnew")).await?;
    let new_id = first.client().user_id()?.clone();
    let mut partners = Vec::new();
    for i in 0..rooms {
        let partner = hearth.user(&format!("gp{i}")).await?;
        let mut partner =
            SecureClient::open(partner, &states.path().join(format!("gp{i}"))).await?;
        let room = partner
            .create_room(RoomKind::Direct, None, std::slice::from_ref(&new_id))
            .await?
            .room_id;
        partners.push((partner, room));
    }
    first.sync().await?;
    let started = Instant::now();
    let mut phone = Client::new(&hearth.url);
    phone
        .login(new_id.as_str(), crate::server::PASSWORD, Some("phone"))
        .await?;
    let mut phone = SecureClient::open(phone, &states.path().join("gnew-phone")).await?;
    for (partner, room) in partners.iter_mut() {
        partner.send_text(room, "for the new phone").await?;
    }
    let got = phone.sync().await?;
    let read = got
        .iter()
        .filter(|r| matches!(r, Received::Message { body, .. } if body.text == "for the new phone"))
        .count();
    if read != rooms {
        bail!("the new device read {read} of {rooms} rooms");
    }
    let device_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (partner, dm) = partners.first_mut().context("rooms")?;
    let (dm_check_ms, dm_send_ms) = send_costs(partner, dm).await?;
    Ok(Report {
        name: "encrypted membership: a big group, a new device",
        figures: vec![
            ("members", members as f64, "", None),
            ("create group to last member reading", group_ms, "ms", None),
            ("rooms of the new device", rooms as f64, "", None),
            (
                "new device login to reading in every room",
                device_ms,
                "ms",
                None,
            ),
            (
                "big group: device check, median",
                group_check_ms,
                "ms",
                None,
            ),
            (
                "big group: send incl. check, median",
                group_send_ms,
                "ms",
                None,
            ),
            ("1:1: device check, median", dm_check_ms, "ms", None),
            ("1:1: send incl. check, median", dm_send_ms, "ms", None),
        ],
    })
}
