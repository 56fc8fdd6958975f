//! `hearth`: run a Hearth homeserver, write its config, administer its users.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hearth_node::accounts::Accounts;
use hearth_node::config::{Config, LogConfig};
use hearth_node::federation::rotation;
use hearth_node::ops::admin::{self, AdminRequest, AdminResponse};
use hearth_node::ops::logging;
use hearth_node::serve;
use hearth_node::store::{OpenError, Store};
use hearth_spec::ServerName;

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "A Hearth homeserver. With no command, serves with the default config."
)]
struct Cli {
    /// Config file (TOML). Without one, defaults apply, overridden by HEARTH_* variables.
    #[arg(long, short, global = true, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a documented config file for a real deployment.
    Init {
        /// This hearth's name, e.g. chat.example.org.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// Where the database and keys will live.
        #[arg(long, default_value = "./hearth-data")]
        data_dir: PathBuf,
        /// Where to write the file.
        #[arg(long, default_value = "hearth.toml")]
        out: PathBuf,
    },
    /// Run the hearth.
    Serve,
    /// Print this hearth's public server key (base64url), generating the key if there is none.
    /// Peers put it in their `[[federation.peers]]` entry for this hearth.
    ServerKey,
    /// Manage users, on a running or a stopped hearth.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create a user. The password is read from standard input.
    CreateUser {
        username: String,
        /// Give the new user the admin flag (`/v1/admin/*`).
        #[arg(long)]
        admin: bool,
    },
    /// List every user.
    ListUsers,
    /// Show a user and their devices.
    ShowUser { user_id: String },
    /// Deactivate a user: no more logins, every device logged out.
    DeactivateUser { user_id: String },
    /// Let a deactivated user log in again.
    ReactivateUser { user_id: String },
    /// Set a user's password (read from standard input) and log every device of theirs out.
    ResetPassword {
        user_id: String,
        /// Keep the user's devices logged in.
        #[arg(long)]
        keep_devices: bool,
    },
    /// Log every device of a user out.
    LogoutUser { user_id: String },
    /// Give a user the admin flag: they may use /v1/admin/* (spec/admin.md).
    GrantAdmin { user_id: String },
    /// Take a user's admin flag away.
    RevokeAdmin { user_id: String },
    /// Make a registration token (for auth.registration = "token"); prints it.
    CreateRegistrationToken {
        /// Registrations it allows (default: unlimited).
        #[arg(long)]
        uses: Option<u32>,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_days: Option<u64>,
    },
    /// List registration tokens with their uses and expiry.
    ListRegistrationTokens,
    /// Delete a registration token.
    DeleteRegistrationToken { token: String },
    /// Copy the database (one consistent snapshot), the media and the keys into DIR (new or
    /// empty), while the hearth serves or not.
    Backup {
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Restore a backup into this hearth's data directory, which must hold no database; the
    /// hearth must be stopped. The copy is checked against the backup's manifest.
    Restore {
        #[arg(long)]
        from: std::path::PathBuf,
    },
    /// List the rooms this hearth holds: id, kind, home, members, latest sequence number.
    ListRooms,
    /// List a room's members.
    RoomMembers { room_id: String },
    /// List a user's uploaded attachments and the bytes they count against the quota.
    ListMedia { user_id: String },
    /// Take an attachment out of service (kept on disk, never served again).
    QuarantineMedia { media_id: String },
    /// Delete an attachment and give its bytes back to its uploader.
    DeleteMedia { media_id: String },
    /// Print the audit log of admin actions, oldest first.
    AuditLog {
        /// Start after this entry number.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Make a new server key current and announce it to every peer, signed by the current key,
    /// which keeps verifying for the grace period. Prints the new public key.
    RotateKey {
        /// How long the current key keeps verifying, in seconds (at least 600).
        #[arg(long, default_value_t = 7 * 24 * 60 * 60)]
        grace_secs: u64,
        /// The current key is compromised: it stops verifying as soon as each peer hears of the
        /// new one (directly, or through gossip), with no grace period.
        #[arg(long)]
        revoke: bool,
    },
    /// Show each peer's outbound queue and what this hearth holds for others as a relay.
    FederationStatus,
    /// Keep a room's messages for DAYS, or `forever` (the default). Older ones are purged now
    /// and by every later retention pass; each keeps its place in the room, emptied.
    SetRetention {
        room_id: String,
        /// Days, or `forever`.
        days: String,
    },
    /// Purge a room's messages sent before a date (`YYYY-MM-DD`, UTC midnight) or a time in
    /// ms since the Unix epoch.
    PurgeHistory {
        room_id: String,
        #[arg(long)]
        before: String,
    },
    /// Shut a room down: every member on this hearth leaves it, and it takes no more messages,
    /// commits or invites (from anyone, if this hearth is its home). Needs the hearth running.
    ShutdownRoom {
        room_id: String,
        /// Confirms the room is to be shut down for good.
        #[arg(long)]
        yes: bool,
    },
    /// Erase an account: it leaves its rooms, its messages are purged, its uploads and
    /// everything stored about it are deleted; the id is never given out again. Needs the
    /// hearth running. There is no undo.
    EraseUser {
        user_id: String,
        /// Confirms that the account's data is to be deleted for good.
        #[arg(long)]
        yes: bool,
    },
    /// Block a hearth: nothing is sent to it or taken from it, directly or through relays,
    /// and this hearth's users cannot write in rooms it orders or add its users. What is queued
    /// for it waits until `unblock-hearth`.
    BlockHearth {
        server: String,
        /// Why, for the other admins (kept with the block).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a block; what waited for the hearth is sent.
    UnblockHearth { server: String },
    /// List blocked hearths: name, since when (ms), reason.
    BlockedHearths,
    /// Send a notice (plain text, shown by the users' clients as from the hearth) to a user,
    /// or with --all to every active user. Stored: devices that are away get it when they
    /// connect.
    Notify {
        /// The user (absent with --all).
        user_id: Option<String>,
        /// Every active user of this hearth.
        #[arg(long, conflicts_with = "user_id")]
        all: bool,
        /// The text (at most 4096 bytes).
        #[arg(long)]
        text: String,
    },
}

/// `YYYY-MM-DD` (UTC midnight) or ms since the Unix epoch.
fn parse_before(text: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        anyhow::bail!("--before takes YYYY-MM-DD or ms since the Unix epoch, not {text:?}");
    };
    let (y, m, d): (i64, i64, i64) = (y.parse()?, m.parse()?, d.parse()?);
    anyhow::ensure!(
        (1970..=9999).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d),
        "{text:?} is not a date from 1970 on"
    );
    // Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(u64::try_from(days)? * 86_400_000)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Init {
            server_name,
            data_dir,
            out,
        }) => {
            logging::init(&LogConfig::default());
            init(&server_name, &data_dir, &out)
        }
        None | Some(Command::Serve) => {
            let config = Config::load(cli.config.as_deref(), std::env::vars())?;
            let log = logging::init(&config.log);
            runtime()?.block_on(serve_until_signal(config, cli.config, log))
        }
        Some(Command::ServerKey) => {
            let config = Config::load(cli.config.as_deref(), std::env::vars())?;
            logging::init(&config.log);
            hearth_node::ops::data_dir::prepare(
                &config.data_dir,
                config.storage.allow_shared_data_dir,
            )?;
            let key = hearth_node::ops::keys::load_or_generate(
                &hearth_node::ops::data_dir::key_path(&config.data_dir),
            )?;
            println!("{}", key.public_key());
            Ok(())
        }
        Some(Command::Admin { action }) => {
            let config = Config::load(cli.config.as_deref(), std::env::vars())?;
            logging::init(&config.log);
            admin_command(config, action)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    raise_open_file_limit();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Many idle WebSockets need many file descriptors: raise the soft limit to the hard limit.
fn raise_open_file_limit() {
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct; no memory is shared.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn init(
    server_name: &str,
    data_dir: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let server_name = ServerName::parse(server_name).context("invalid --server-name")?;
    if out.exists() {
        bail!("{} exists already; not overwriting it", out.display());
    }
    std::fs::write(out, Config::documented_toml(&server_name, data_dir))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {}; start the hearth with: hearth serve --config {}",
        out.display(),
        out.display()
    );
    Ok(())
}

async fn serve_until_signal(
    config: Config,
    path: Option<PathBuf>,
    log: logging::LogReload,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = serve::start(config).await?;
    eprintln!("hearth: serving clients on http://{}", running.client_addr);
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hangup.recv() => reload(&running, path.as_deref(), &log),
        }
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// SIGHUP: reads the configuration again (file and environment) and applies what can change
/// while serving, the rate limits and the log filter; connections stay open. A configuration
/// that does not load is refused and the running one kept.
fn reload(running: &serve::Running, path: Option<&std::path::Path>, log: &logging::LogReload) {
    let config = match Config::load(path, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the configuration does not load; nothing changed");
            return;
        }
    };
    running.reload_limits(&config);
    match log.apply(&config.log) {
        Ok(()) => tracing::info!("SIGHUP: reloaded the rate limits and the log filter"),
        Err(e) => tracing::error!(error = %e, "SIGHUP: reloaded the rate limits; log filter kept"),
    }
}

fn admin_command(config: Config, action: AdminAction) -> anyhow::Result<()> {
    let request = match action {
        AdminAction::Restore { from } => return restore(&config, &from),
        AdminAction::Backup { to } => AdminRequest::Backup {
            // The hearth resolves the path from its own working directory.
            to: std::path::absolute(&to)?.to_string_lossy().into_owned(),
        },
        AdminAction::CreateUser { username, admin } => AdminRequest::CreateUser {
            username,
            password: read_password()?,
            admin,
        },
        AdminAction::ListUsers => AdminRequest::ListUsers,
        AdminAction::ShowUser { user_id } => AdminRequest::User { user_id },
        AdminAction::DeactivateUser { user_id } => AdminRequest::DeactivateUser { user_id },
        AdminAction::ReactivateUser { user_id } => AdminRequest::ReactivateUser { user_id },
        AdminAction::ResetPassword {
            user_id,
            keep_devices,
        } => AdminRequest::ResetPassword {
            user_id,
            password: read_password()?,
            logout_devices: !keep_devices,
        },
        AdminAction::LogoutUser { user_id } => AdminRequest::LogoutUser { user_id },
        AdminAction::GrantAdmin { user_id } => AdminRequest::SetAdmin {
            user_id,
            admin: true,
        },
        AdminAction::RevokeAdmin { user_id } => AdminRequest::SetAdmin {
            user_id,
            admin: false,
        },
        AdminAction::CreateRegistrationToken { uses, expires_days } => {
            AdminRequest::CreateRegistrationToken {
                uses,
                expires_ts: expires_days.map(|days| {
                    hearth_node::clock::now_ms().saturating_add(days.saturating_mul(86_400_000))
                }),
            }
        }
        AdminAction::ListRegistrationTokens => AdminRequest::ListRegistrationTokens,
        AdminAction::DeleteRegistrationToken { token } => {
            AdminRequest::DeleteRegistrationToken { token }
        }
        AdminAction::AuditLog { from } => AdminRequest::Audit { from, limit: None },
        AdminAction::ListMedia { user_id } => AdminRequest::ListMedia { user_id },
        AdminAction::ListRooms => AdminRequest::ListRooms {
            from: None,
            limit: None,
        },
        AdminAction::RoomMembers { room_id } => AdminRequest::RoomMembers {
            room_id: hearth_spec::RoomId::parse(&room_id)?,
        },
        AdminAction::QuarantineMedia { media_id } => AdminRequest::QuarantineMedia { media_id },
        AdminAction::DeleteMedia { media_id } => AdminRequest::DeleteMedia { media_id },
        AdminAction::FederationStatus => AdminRequest::FederationStatus,
        AdminAction::SetRetention { room_id, days } => AdminRequest::SetRetention {
            room_id: hearth_spec::RoomId::parse(&room_id)?,
            days: match days.as_str() {
                "forever" => None,
                days => Some(days.parse().map_err(|_| {
                    anyhow::anyhow!("DAYS is a number of days or `forever`, not {days:?}")
                })?),
            },
        },
        AdminAction::PurgeHistory { room_id, before } => AdminRequest::PurgeHistory {
            room_id: hearth_spec::RoomId::parse(&room_id)?,
            before_ts: parse_before(&before)?,
        },
        AdminAction::ShutdownRoom { room_id, yes } => {
            anyhow::ensure!(
                yes,
                "shutting {room_id} down cannot be undone; run again with --yes"
            );
            AdminRequest::ShutdownRoom {
                room_id: hearth_spec::RoomId::parse(&room_id)?,
            }
        }
        AdminAction::EraseUser { user_id, yes } => {
            anyhow::ensure!(
                yes,
                "erasing {user_id} deletes their data for good; run again with --yes"
            );
            AdminRequest::EraseUser { user_id }
        }
        AdminAction::BlockHearth { server, reason } => AdminRequest::BlockHearth {
            server: hearth_spec::ServerName::parse(&server)?,
            reason,
        },
        AdminAction::UnblockHearth { server } => AdminRequest::UnblockHearth {
            server: hearth_spec::ServerName::parse(&server)?,
        },
        AdminAction::BlockedHearths => AdminRequest::BlockedHearths,
        AdminAction::Notify { user_id, all, text } => {
            anyhow::ensure!(
                all || user_id.is_some(),
                "name a user, or pass --all for every user"
            );
            AdminRequest::SendNotice {
                user_id,
                body: text,
            }
        }
        AdminAction::RotateKey { grace_secs, revoke } => AdminRequest::RotateKey {
            grace_ms: grace_secs.saturating_mul(1000),
            revoke,
        },
    };
    // An admin may create the first users before the hearth has ever run.
    hearth_node::ops::data_dir::prepare(&config.data_dir, config.storage.allow_shared_data_dir)?;
    let response = match Store::open(&hearth_node::ops::data_dir::db_path(&config.data_dir)) {
        Ok(store) => {
            // The hearth is stopped: work on the database directly.
            let store = std::sync::Arc::new(store);
            let keys = std::sync::Arc::new(rotation::load_key_ring(&config.data_dir)?);
            let accounts = Accounts::new(
                store.clone(),
                keys.clone(),
                config.server_name.clone(),
                config.auth.clone(),
            )?;
            let mut directory = hearth_node::federation::directory(&config, store.as_ref())?;
            hearth_node::federation::discovery::learn_kept(&mut directory, store.as_ref(), &config);
            let peers = directory.peers();
            let custody = std::sync::Arc::new(hearth_node::federation::custody::Custody::load(
                config.server_name.clone(),
                config.federation.relay.clone(),
                store.clone(),
            )?);
            let directory = std::sync::Arc::new(std::sync::RwLock::new(directory));
            let rotator = rotation::KeyRotator {
                data_dir: config.data_dir.clone(),
                store: store.clone(),
                keys,
                peers: std::sync::Arc::new(move || peers.clone()),
                // Nothing is running to tell; the hearth finds the queued announcements at start.
                hook: None,
            };
            admin::execute(
                &admin::Admin {
                    store: store.clone(),
                    media: hearth_node::chat::media::MediaStore::open(&config.data_dir)?,
                    media_quota: config.limits.media_quota_bytes,
                    accounts: accounts.into(),
                    rotator,
                    custody,
                    directory,
                    swarm: None,
                    blocked: None,
                    rooms: None,
                },
                admin::LOCAL_ACTOR,
                request,
            )
        }
        Err(OpenError::InUse) => {
            let socket = hearth_node::ops::data_dir::admin_socket_path(&config.data_dir);
            runtime()?
                .block_on(admin::request_socket(&socket, &request))
                .with_context(|| {
                    format!(
                        "the hearth is running but its admin socket {} does not answer",
                        socket.display()
                    )
                })?
        }
        Err(e) => return Err(e.into()),
    };
    match response {
        AdminResponse::Created { user_id } => println!("created {user_id}"),
        AdminResponse::Users { users, .. } => {
            for u in users {
                println!("{}", user_line(&u));
            }
        }
        AdminResponse::User { user, devices } => {
            println!("{}", user_line(&user));
            for d in devices {
                let seen = match (d.last_seen_ip, d.last_seen_ts) {
                    (Some(ip), Some(ts)) => format!("\tseen from {ip} at {ts}"),
                    _ => String::new(),
                };
                println!(
                    "device\t{}\t{}\tcreated {}{seen}",
                    d.device_id, d.name, d.created_ts
                );
            }
        }
        AdminResponse::Deactivated { user_id } => println!("deactivated {user_id}"),
        AdminResponse::Updated {
            user_id,
            devices_logged_out,
        } => println!("updated {user_id}; {devices_logged_out} device(s) logged out"),
        AdminResponse::RegistrationToken { token } => println!("{}", token.token),
        AdminResponse::RegistrationTokens { tokens } => {
            for t in tokens {
                let allowed = t.uses_allowed.map_or("unlimited".into(), |n| n.to_string());
                let expires = t.expires_ts.map_or("never".into(), |ts| ts.to_string());
                println!(
                    "{}\tused {} of {allowed}\texpires {expires}",
                    t.token, t.uses
                );
            }
        }
        AdminResponse::Deleted { token } => println!("deleted {token}"),
        AdminResponse::Media {
            user_id,
            media,
            used_bytes,
            quota_bytes,
        } => {
            let quota = if quota_bytes == 0 {
                "no quota".to_owned()
            } else {
                format!("of {quota_bytes}")
            };
            println!("{user_id}\t{used_bytes} bytes used, {quota}");
            for m in media {
                let state = if m.quarantined { "\tquarantined" } else { "" };
                println!("{}\t{}\t{}{state}", m.media_id, m.size, m.ts);
            }
        }
        AdminResponse::MediaQuarantined { media_id } => println!("quarantined {media_id}"),
        AdminResponse::Rooms { rooms, next } => {
            for r in rooms {
                let kind = match r.kind {
                    hearth_spec::RoomKind::Direct => "direct",
                    hearth_spec::RoomKind::Group => "group",
                };
                println!(
                    "{}\t{kind}\thome {}\t{} members\tseq {}\t{}",
                    r.room_id,
                    r.home,
                    r.members,
                    r.last_seq,
                    r.name.unwrap_or_default()
                );
            }
            if let Some(next) = next {
                eprintln!("(more rooms after {next})");
            }
        }
        AdminResponse::RoomMembers { members, .. } => {
            for m in members {
                println!("{m}");
            }
        }
        AdminResponse::MediaDeleted { media_id } => println!("deleted {media_id}"),
        AdminResponse::Retention {
            room_id,
            days,
            purged,
        } => match days {
            Some(days) => println!("{room_id} keeps messages {days} days; {purged} purged now"),
            None => println!("{room_id} keeps messages forever"),
        },
        AdminResponse::HistoryPurged {
            room_id,
            purged,
            floor,
        } => println!("{room_id}: {purged} messages purged; every message before #{floor} is"),
        AdminResponse::RoomShutDown {
            room_id,
            members_removed,
        } => println!("shut {room_id} down; {members_removed} member(s) here left it"),
        AdminResponse::Erased {
            user_id,
            rooms_left,
            messages_purged,
            media_deleted,
        } => println!(
            "erased {user_id}: left {rooms_left} room(s), {messages_purged} message(s) purged, \
             {media_deleted} upload(s) deleted"
        ),
        AdminResponse::HearthBlock {
            server,
            blocked,
            changed,
        } => match (blocked, changed) {
            (true, true) => println!("blocked {server}"),
            (true, false) => println!("{server} was blocked already"),
            (false, true) => println!("unblocked {server}"),
            (false, false) => println!("{server} was not blocked"),
        },
        AdminResponse::NoticeSent { recipients } => {
            println!("notice sent to {recipients} user(s)")
        }
        AdminResponse::BlockedHearths { blocked } => {
            for b in blocked {
                println!("{}	{}	{}", b.server, b.ts, b.reason.unwrap_or_default());
            }
        }
        AdminResponse::BackedUp {
            to,
            tables,
            media_files,
            media_bytes,
        } => {
            let rows: u64 = tables.iter().map(|(_, rows)| rows).sum();
            println!(
                "backed up to {to}: {} tables, {rows} rows, {media_files} media files ({media_bytes} bytes)",
                tables.len()
            );
        }
        AdminResponse::Audit { entries } => {
            for e in entries {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    e.seq, e.ts, e.actor, e.action, e.target
                );
            }
        }
        AdminResponse::KeyRotated {
            revoked: true,
            new_key,
            peers_told,
            ..
        } => {
            println!("{new_key}");
            eprintln!(
                "the new key is current and the old key is revoked: each peer stops accepting it as soon as it hears (directly: {peers_told} peer(s) queued; and by gossip to every hearth in the network)."
            );
        }
        AdminResponse::KeyRotated {
            revoked: false,
            new_key,
            old_valid_until_ms,
            peers_told,
        } => {
            println!("{new_key}");
            eprintln!(
                "the new key is current; {peers_told} peer(s) are being told, and the old key keeps verifying until {old_valid_until_ms} ms since the epoch. Peers learn the new key from this hearth; update their [[federation.peers]] entries at leisure."
            );
        }
        AdminResponse::FederationStatus {
            peers,
            swarm,
            peer_id,
            queues,
            held,
        } => {
            if let Some(peer_id) = peer_id {
                println!("peer-id\t{peer_id}");
            }
            for address in swarm {
                println!("swarm\t{address}");
            }
            for (peer, how, key) in peers {
                println!("peer\t{peer}\t{how}\t{key}");
            }
            for (peer, depth) in queues {
                println!("queue\t{peer}\t{depth}");
            }
            for (origin, envelopes, bytes) in held {
                println!("held\t{origin}\t{envelopes}\t{bytes}");
            }
        }
        AdminResponse::Error { message, .. } => bail!("{message}"),
    }
    Ok(())
}

/// Restores a backup into the data directory of a stopped hearth, and audits it there.
fn restore(config: &Config, from: &std::path::Path) -> anyhow::Result<()> {
    hearth_node::ops::data_dir::prepare(&config.data_dir, config.storage.allow_shared_data_dir)?;
    let manifest =
        hearth_node::ops::backup::restore(from, &config.data_dir, config.server_name.as_str())?;
    let store = Store::open(&hearth_node::ops::data_dir::db_path(&config.data_dir))?;
    store.append_audit(&hearth_node::store::tables::AuditRecord {
        ts: hearth_node::clock::now_ms(),
        actor: admin::LOCAL_ACTOR.into(),
        action: "restore".into(),
        target: from.display().to_string(),
    })?;
    let rows: u64 = manifest.tables.iter().map(|(_, rows)| rows).sum();
    println!(
        "restored {} ({} rows, {} media files, taken at {} ms since the epoch) into {}",
        from.display(),
        rows,
        manifest.media_files,
        manifest.created_ts,
        config.data_dir.display()
    );
    Ok(())
}

fn user_line(u: &admin::UserEntry) -> String {
    let state = if u.deactivated {
        "deactivated"
    } else {
        "active"
    };
    let admin = if u.admin { "\tadmin" } else { "" };
    format!("{}\t{state}{admin}", u.user_id)
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password given on standard input");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::parse_before;

    #[test]
    fn purge_dates_are_utc_midnights_or_milliseconds() {
        assert_eq!(parse_before("1970-01-01").unwrap(), 0);
        assert_eq!(parse_before("1972-01-01").unwrap(), 63_072_000_000);
        assert_eq!(parse_before("2000-02-29").unwrap(), 951_782_400_000);
        assert_eq!(parse_before("2000-03-01").unwrap(), 951_868_800_000);
        assert_eq!(parse_before("2026-12-02").unwrap(), 1_796_169_600_000);
        assert_eq!(parse_before("1796169600123").unwrap(), 1_796_169_600_123);
        for bad in ["yesterday", "2026-13-01", "1969-12-31", "2026-12", "-5"] {
            assert!(parse_before(bad).is_err(), "{bad}");
        }
    }
}
