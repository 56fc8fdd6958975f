//! `hearth-chat`: the terminal client. A profile directory keeps the session between commands.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
mod local;

/// `println!` for what this program prints on standard output, except that a reader that went
/// away (`hearth-chat history … | head -1`) ends the program quietly instead of a panic: its
/// state is saved before anything is printed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        let line = $crate::printable::terminal_safe(&line);
        if !$crate::profile_server::captured(1, &line) {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                std::process::exit(0);
            }
        }
    }};
}

mod chat_input;
mod printable;
mod profile_server;

use hearth_client::e2ee::Received;
use hearth_client::{Client, ClientError, SecureClient};
use hearth_spec::api::{RoomSummary, Session};
use hearth_spec::client::{ClientFrame, PresenceState, ReceiptKind, ServerFrame};
use hearth_spec::{Content, EventView, Membership, RoomId, RoomKind, UserId};
use local::{LocalMessages, message_text, sender_and_text};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "hearth-chat",
    version,
    about = "Chat on a Hearth homeserver from the terminal."
)]
struct Cli {
    /// Directory that keeps this client's session. Default: ~/.hearth-chat
    #[arg(long, global = true, env = "HEARTH_CHAT_PROFILE")]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account (password read from standard input) and log in.
    Register {
        username: String,
        /// Your hearth, e.g. http://127.0.0.1:8008
        #[arg(long, default_value = "http://127.0.0.1:8008")]
        server: String,
        /// This device's name in `devices` (default: `hearth-chat on HOSTNAME`).
        #[arg(long)]
        device_name: Option<String>,
        /// A registration token from the hearth's administrator (for a hearth that registers
        /// only with one).
        #[arg(long)]
        token: Option<String>,
    },
    /// Log in (password read from standard input).
    Login {
        username: String,
        #[arg(long, default_value = "http://127.0.0.1:8008")]
        server: String,
        /// This device's name in `devices` (default: `hearth-chat on HOSTNAME`).
        #[arg(long)]
        device_name: Option<String>,
    },
    /// Log this device out.
    Logout,
    /// Show who this profile is logged in as.
    Whoami,
    /// List your devices.
    Devices,
    /// Log one of your other devices out.
    RemoveDevice { device_id: String },
    /// Start (or reopen) a 1:1 chat with a user.
    Dm { user: String },
    /// Create a group with a name and members.
    Group { name: String, members: Vec<String> },
    /// Add someone to a group. ROOM is a room id, a group name or @user for a 1:1 chat.
    Invite { room: String, user: String },
    /// Remove someone from a group (its admins only: see `members`). Their devices lose the
    /// group's keys at once: they read nothing sent after it.
    Remove { room: String, user: String },
    /// Leave a room.
    Leave { room: String },
    /// List a room's members, and which of them are the group's admins.
    Members { room: String },
    /// Make a member of a group an admin (admins only), or with --off take the role back (your
    /// own too, if another admin remains).
    Admin {
        room: String,
        user: String,
        #[arg(long)]
        off: bool,
    },
    /// List your rooms with unread counts.
    Rooms,
    /// Send a text message (end-to-end encrypted).
    Send { room: String, text: Vec<String> },
    /// Send a file, encrypted with a fresh key that travels inside the encrypted message.
    SendFile {
        room: String,
        path: PathBuf,
        /// A caption shown with the file.
        #[arg(long, default_value = "")]
        caption: String,
    },
    /// Save the file of message SEQ in ROOM to PATH (fetched through your hearth, decrypted).
    SaveFile {
        room: String,
        seq: u64,
        path: PathBuf,
    },
    /// Show this device's safety fingerprint, or (with ROOM) every member device's, to compare
    /// with the other people in person or on a call.
    Fingerprint { room: Option<String> },
    /// Add your devices that logged in since to your rooms (every command does it too).
    AddDevices,
    /// Show a room's history, newest last; page back with --before.
    History {
        room: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show events before this sequence number.
        #[arg(long)]
        before: Option<u64>,
    },
    /// Search what this device has read, in every room (words match whole words or their
    /// start; every word must match). The hearth sees only ciphertext: the search is local.
    Search {
        #[arg(required = true)]
        words: Vec<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show whether a user is online, or when they were last seen.
    Presence { user: String },
    /// Hide (on) or show (off) your presence and last-seen time.
    HidePresence { on_or_off: String },
    /// Show the notices your hearth's admins sent you (unread ones marked `new`), and mark them
    /// read on all your devices. `follow` and `chat` show new ones as they come.
    Notices,
    /// Follow all your rooms live (Ctrl-C to stop).
    Follow,
    /// Chat in one room: lines you type are sent, new messages are shown.
    Chat { room: String },
    /// Push notifications for this device while it is offline (never with message content).
    Push {
        #[command(subcommand)]
        action: PushAction,
    },
}

#[derive(Subcommand)]
enum PushAction {
    /// Notify URL: a UnifiedPush or webhook endpoint (e.g. an ntfy topic URL); with --p256dh
    /// and --auth, a Web Push subscription. Replaces this device's endpoint.
    Add {
        url: String,
        /// The subscription's public key (base64url), for Web Push.
        #[arg(long, requires = "auth")]
        p256dh: Option<String>,
        /// The subscription's auth secret (base64url), for Web Push.
        #[arg(long, requires = "p256dh")]
        auth: Option<String>,
    },
    /// Show this device's endpoint, and whether the hearth disabled it.
    List,
    /// Stop push notifications for this device.
    Remove,
}

#[derive(Serialize, Deserialize)]
struct Profile {
    server: String,
    session: Session,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// How a failed command is told: the hearth's own sentence for a refused request, else the error
/// with its causes.
fn error_line(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api { body, .. }) => format!("error: {}", body.message),
        _ => format!("error: {e:#}"),
    }
}

fn profile_dir(cli: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match cli {
        Some(dir) => Ok(dir.clone()),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --profile DIR")?;
            Ok(PathBuf::from(home).join(".hearth-chat"))
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Client> {
    let path = dir.join("session.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| anyhow::anyhow!("not logged in; run `hearth-chat login USERNAME` or `hearth-chat register USERNAME` first"))?;
    let profile: Profile = serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged; log in again", path.display()))?;
    Ok(Client::with_session(&profile.server, profile.session))
}

fn save(dir: &Path, client: &Client) -> anyhow::Result<()> {
    hearth_client::durable_file::create_dir_all(dir)?;
    let path = dir.join("session.json");
    match client.session() {
        Some(session) => {
            let profile = Profile {
                server: client.base_url().to_owned(),
                session: session.clone(),
            };
            hearth_client::durable_file::replace(&path, &serde_json::to_vec_pretty(&profile)?)?;
        }
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password given");
    }
    Ok(password)
}

/// A device's name when `--device-name` is not given: the program and the machine, so that
/// `devices` (and `remove-device`) tell a user's terminals apart. 64 bytes of host name at most,
/// well inside the hearth's 128.
fn default_device_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().take(64).collect();
    if host.is_empty() {
        "hearth-chat".into()
    } else {
        format!("hearth-chat on {host}")
    }
}

/// Registers or logs in, and saves the session in the profile.
async fn enter(
    dir: &Path,
    server: &str,
    username: &str,
    device_name: Option<String>,
    // Some (with its registration token, if any) to register; None to log in.
    register: Option<Option<String>>,
) -> anyhow::Result<()> {
    let mut client = Client::new(server);
    let password = read_password()?;
    let device_name = device_name.unwrap_or_else(default_device_name);
    let device_name = Some(device_name.as_str());
    // Told to wait (many logins at once, or this account's attempts): wait as long as the
    // hearth says, a few times, and say so.
    let mut waits = 0;
    let (verb, session) = loop {
        let attempt = if let Some(token) = &register {
            client
                .register_with_token(username, &password, device_name, token.as_deref())
                .await
                .map(|s| ("registered", s))
        } else {
            client
                .login(username, &password, device_name)
                .await
                .map(|s| ("logged in as", s))
        };
        match attempt {
            Err(ClientError::Api { body, .. })
                if body.code == hearth_spec::ErrorCode::RateLimited && waits < 5 =>
            {
                waits += 1;
                let wait = std::time::Duration::from_millis(body.retry_after_ms.unwrap_or(1000));
                eprintln!(
                    "{}; trying again in {:.1} s",
                    body.message,
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
            attempt => break attempt?,
        }
    };
    say!("{verb} {} (device {})", session.user_id, session.device_id);
    save(dir, &client)?;
    let secure = open_secure(dir, client).await?;
    say!(
        "this device's safety fingerprint: {}",
        secure.mls().fingerprint()
    );
    Ok(())
}

/// The device's end-to-end state lives beside the session, in `<profile>/mls`. If another
/// `hearth-chat` holds it (`follow`, `chat`), the command is handed to that one: its answer is
/// printed and this process ends with its exit code.
async fn open_secure(dir: &Path, client: Client) -> anyhow::Result<SecureClient> {
    match SecureClient::open(client, &dir.join("mls")).await {
        Ok(secure) => Ok(secure),
        Err(hearth_client::SecureError::E2ee(hearth_client::e2ee::E2eeError::InUse(_))) => {
            let code = profile_server::forward(dir).await?;
            std::process::exit(code);
        }
        Err(e) => Err(e.into()),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = profile_dir(&cli.profile)?;
    match cli.command {
        Command::Register {
            username,
            server,
            device_name,
            token,
        } => enter(&dir, &server, &username, device_name, Some(token)).await,
        Command::Login {
            username,
            server,
            device_name,
        } => enter(&dir, &server, &username, device_name, None).await,
        Command::Logout => {
            let mut client = load(&dir)?;
            client.logout().await?;
            save(&dir, &client)?;
            // The device is gone: its keys are of no more use. What it read stays.
            let _ = std::fs::remove_dir_all(dir.join("mls"));
            say!("logged out");
            Ok(())
        }
        command => {
            let client = load(&dir)?;
            let mut secure = open_secure(&dir, client).await?;
            let mut local = LocalMessages::open(&dir)?;
            // What an earlier run decrypted and could not keep (it crashed, or failed midway).
            keep_decrypted(&mut secure, &mut local)?;
            let result = logged_in(&mut secure, &mut local, command, &dir).await;
            // What the device read while catching up for a commit or a send is kept too, and
            // what a command that failed midway had decrypted.
            secure.take_unreported();
            keep_decrypted(&mut secure, &mut local)?;
            let waiting = secure.waiting_to_resend();
            if waiting > 0 {
                eprintln!(
                    "{waiting} message(s) overtaken by a key change wait to be sent again (on the next command)"
                );
            }
            // Save even after an error: a refresh may have rotated the tokens.
            save(&dir, secure.client())?;
            result
        }
    }
}

/// Processes the inbox: decrypts what arrived and keeps it.
async fn catch_up(secure: &mut SecureClient, local: &mut LocalMessages) -> anyhow::Result<()> {
    secure.sync().await?;
    keep_decrypted(secure, local)
}

/// Keeps on disk every message the device decrypted and has not confirmed keeping, confirms
/// them, and flushes the device state: a command returns (and shows what it read) with all of it
/// on disk. Until kept, messages are in the device state (saved with the ratchet step that used
/// their key): an MLS device decrypts a message only once.
fn keep_decrypted(secure: &mut SecureClient, local: &mut LocalMessages) -> anyhow::Result<()> {
    keep_unflushed(secure, local)?;
    secure.mls_mut().flush()?;
    Ok(())
}

/// [`keep_decrypted`] but the device state's flush, which the caller makes before it
/// acknowledges anything (`follow` shows a message first).
fn keep_unflushed(secure: &mut SecureClient, local: &mut LocalMessages) -> anyhow::Result<()> {
    let decrypted = secure.mls().unconfirmed();
    local.record_all(&decrypted)?;
    secure.mls_mut().kept(&decrypted)?;
    Ok(())
}

async fn logged_in(
    secure: &mut SecureClient,
    local: &mut LocalMessages,
    command: Command,
    profile: &Path,
) -> anyhow::Result<()> {
    // `follow` and `chat` show what arrived since the last command: their stream starts there.
    let since = secure.mls().cursor();
    catch_up(secure, local).await?;
    match command {
        Command::Register { .. } | Command::Login { .. } | Command::Logout => {
            unreachable!("handled before")
        }
        Command::Send { room, text } => {
            let room = resolve_room(secure.client(), &room).await?;
            let text = text.join(" ");
            if text.is_empty() {
                bail!("nothing to send");
            }
            let done = secure.send_text(&room.room_id, &text).await?;
            print_sent(&done, &room);
            print_waiting(secure, &room.room_id);
        }
        Command::SendFile {
            room,
            path,
            caption,
        } => {
            let room = resolve_room(secure.client(), &room).await?;
            let contents =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let done = secure
                .send_file(&room.room_id, &name, &contents, &caption)
                .await?;
            print_sent(&done, &room);
        }
        Command::SaveFile { room, seq, path } => {
            let room = resolve_room(secure.client(), &room).await?;
            let attachment = local
                .get(&room.room_id, seq)
                .and_then(|m| m.attachment.clone())
                .with_context(|| format!("message #{seq} has no file this device can open"))?;
            let contents = secure.fetch_file(&attachment).await?;
            std::fs::write(&path, &contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
            say!(
                "saved {} ({} bytes) to {}",
                attachment.name,
                contents.len(),
                path.display()
            );
        }
        Command::Fingerprint { room: None } => {
            say!("{}", secure.mls().fingerprint());
        }
        Command::Fingerprint { room: Some(room) } => {
            let room = resolve_room(secure.client(), &room).await?;
            for (user, device, fingerprint) in secure.mls().member_fingerprints(&room.room_id) {
                say!("{user}\t{device}\t{fingerprint}");
            }
            let check = secure.check_membership(&room.room_id).await?;
            for user in &check.not_in_group {
                say!(
                    "warning: {user} is routed this room by the hearth but no member added them to the encrypted group; they cannot read it"
                );
            }
        }
        Command::AddDevices => {
            secure.sync_own_devices().await?;
            catch_up(secure, local).await?;
            say!("your devices are in all your encrypted rooms");
        }
        Command::Dm { user } => {
            let user: UserId = user.parse().context("a user id looks like @name:server")?;
            let rooms = secure.client().rooms().await?;
            let room_id = if let Some(room) = rooms
                .iter()
                .find(|r| r.kind == RoomKind::Direct && r.members.contains(&user))
            {
                say!("{}\t(existing chat with {user})", room.room_id);
                // An earlier attempt may have left them out (their hearth was down).
                secure.converge(&room.room_id).await?;
                room.room_id.clone()
            } else {
                let room = secure
                    .create_room(RoomKind::Direct, None, std::slice::from_ref(&user))
                    .await?;
                say!("{}\t(new chat with {user})", room.room_id);
                room.room_id
            };
            print_waiting(secure, &room_id);
        }
        Command::Group { name, members } => {
            let members = members
                .iter()
                .map(|m| {
                    m.parse()
                        .with_context(|| format!("{m} is not a user id (@name:server)"))
                })
                .collect::<anyhow::Result<Vec<UserId>>>()?;
            let room = secure
                .create_room(RoomKind::Group, Some(&name), &members)
                .await?;
            say!(
                "{}\t{} ({} members)",
                room.room_id,
                name,
                room.members.len()
            );
            print_waiting(secure, &room.room_id);
        }
        Command::Invite { room, user } => {
            let room = resolve_room(secure.client(), &room).await?;
            let user: UserId = user.parse().context("a user id looks like @name:server")?;
            secure.invite(&room.room_id, &user).await?;
            say!(
                "added {user} to {}",
                display_name(&room, secure.client().user_id()?)
            );
            print_waiting(secure, &room.room_id);
        }
        Command::Remove { room, user } => {
            let room = resolve_room(secure.client(), &room).await?;
            let user: UserId = user.parse().context("a user id looks like @name:server")?;
            secure.remove_member(&room.room_id, &user).await?;
            say!(
                "removed {user} from {}",
                display_name(&room, secure.client().user_id()?)
            );
        }
        Command::RemoveDevice { device_id } => {
            let device = device_id.parse().context("invalid device id")?;
            secure.remove_device(&device).await?;
            say!("logged out device {device_id} and removed it from your encrypted rooms");
        }
        Command::Follow => follow(secure, local, since, None, profile).await?,
        Command::Chat { room } => {
            let room = resolve_room(secure.client(), &room).await?;
            follow(secure, local, since, Some(room), profile).await?;
        }
        Command::History {
            room,
            limit,
            before,
        } => {
            let summary = match resolve_room(secure.client(), &room).await {
                Ok(summary) => summary,
                Err(e) => match left_room(&room, &e) {
                    // The hearth shows a room's events to its members only; what this device
                    // read there before leaving is its own to show.
                    Some(left) => return kept_history(local, &left, limit, before),
                    None => return Err(e),
                },
            };
            let joined = secure.mls().joined_seq(&summary.room_id);
            history(secure.client(), local, (summary, joined), limit, before).await?;
        }
        Command::Search { words, limit } => {
            let found = local.search(&words.join(" "), limit);
            if found.is_empty() {
                say!("nothing you have read matches {:?}", words.join(" "));
            }
            let me = secure.client().user_id()?.clone();
            let rooms = secure.client().rooms().await?;
            for shown in found {
                let room = rooms.iter().find(|r| r.room_id == shown.room);
                let name = room.map_or_else(|| shown.room.to_string(), |r| display_name(r, &me));
                say!("[{name}] #{} {}", shown.seq, sender_and_text(shown));
                say!(
                    "    in context: hearth-chat history {:?} --before {}",
                    name,
                    shown.seq + 6
                );
            }
        }
        command => plain(secure.client(), command).await?,
    }
    Ok(())
}

/// Says who cannot read the room yet: their devices join the encrypted group as soon as their
/// hearth answers, by whichever member's device acts first, and what was sent meanwhile is sent
/// to them again.
fn print_waiting(secure: &SecureClient, room: &RoomId) {
    for (user, why) in secure.waiting(room) {
        say!(
            "waiting for {} to add {user} ({why}); messages sent meanwhile reach them when it does",
            user.server_name()
        );
    }
}

fn print_sent(done: &hearth_spec::api::Sequenced, room: &RoomSummary) {
    match done.seq {
        // The room's sequence number counts key changes and joins too: not a number to show.
        Some(_) => say!("sent (encrypted)"),
        // The room lives on another hearth: durable on ours, sequenced when it arrives.
        None => say!("sent (accepted; on its way to {})", room.room_id.home()),
    }
}

/// Commands that need no keys.
async fn plain(client: &mut Client, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Whoami => {
            let session = client.session().expect("loaded");
            say!(
                "{} (device {}) on {}",
                session.user_id,
                session.device_id,
                client.base_url()
            );
        }
        Command::Devices => {
            for d in client.devices().await? {
                let mark = if d.current { " (this device)" } else { "" };
                say!("{}\t{}{}", d.device_id, d.name, mark);
            }
        }
        Command::Leave { room } => {
            let room = resolve_room(client, &room).await?;
            client.leave(&room.room_id).await?;
            say!("left {}", display_name(&room, client.user_id()?));
        }
        Command::Members { room } => {
            let room = resolve_room(client, &room).await?;
            let me = client.user_id()?.clone();
            for member in &room.members {
                let admin = if room.admins.contains(member) {
                    "\tadmin"
                } else {
                    ""
                };
                let you = if *member == me { " (you)" } else { "" };
                say!("{member}{you}{admin}");
            }
        }
        Command::Admin { room, user, off } => {
            let room = resolve_room(client, &room).await?;
            let user: UserId = user.parse().context("a user id looks like @name:server")?;
            client.set_admin(&room.room_id, &user, !off).await?;
            let name = display_name(&room, client.user_id()?);
            if off {
                say!("{user} is no longer an admin of {name}");
            } else {
                say!("{user} is now an admin of {name}");
            }
        }
        Command::Rooms => {
            let me = client.user_id()?.clone();
            let rooms = client.rooms().await?;
            if rooms.is_empty() {
                say!("no rooms yet; start one with `hearth-chat dm @someone:server`");
            }
            for room in rooms {
                let unread = if room.unread > 0 {
                    format!("{} unread", room.unread)
                } else {
                    "read".into()
                };
                say!("{}\t{}\t{}", display_name(&room, &me), unread, room.room_id);
            }
        }
        Command::Presence { user } => {
            let user: UserId = user.parse().context("a user id looks like @name:server")?;
            let view = client.presence(&user).await?;
            match (view.state, view.last_seen_ts) {
                (PresenceState::Online, _) => say!("{user} is online"),
                (PresenceState::Offline, Some(ts)) => {
                    let ago = now_ms().saturating_sub(ts) / 1000;
                    say!("{user} is offline, last seen {} ago", human_duration(ago));
                }
                (PresenceState::Offline, None) => say!("{user} is offline"),
            }
        }
        Command::Push { action } => push(client, action).await?,
        Command::HidePresence { on_or_off } => {
            let hidden = match on_or_off.as_str() {
                "on" => true,
                "off" => false,
                other => bail!("say `on` or `off`, not {other:?}"),
            };
            client.set_presence_hidden(hidden).await?;
            say!("presence {}", if hidden { "hidden" } else { "shown" });
        }
        Command::Notices => {
            let (mut after, mut last, mut read) = (0, 0, 0);
            loop {
                let page = client
                    .notices(after, hearth_spec::api::MAX_NOTICES_PAGE)
                    .await?;
                read = read.max(page.read);
                for notice in &page.notices {
                    say!("{}", format_notice(notice, notice.seq > page.read));
                    last = notice.seq;
                }
                match page.next {
                    Some(next) => after = next,
                    None => break,
                }
            }
            if last == 0 {
                say!("no notices from your hearth");
            } else if last > read {
                client.mark_notices_read(last).await?;
            }
        }
        _ => unreachable!("handled with keys"),
    }
    Ok(())
}

async fn push(client: &mut Client, action: PushAction) -> anyhow::Result<()> {
    use hearth_spec::api::{PusherKind, PusherRequest};
    match action {
        PushAction::Add { url, p256dh, auth } => {
            let kind = match p256dh {
                Some(_) => PusherKind::WebPush,
                None => PusherKind::Webhook,
            };
            let info = client
                .set_pusher(&PusherRequest {
                    kind,
                    url,
                    p256dh,
                    auth,
                })
                .await?;
            say!("notifications for this device go to {}", info.url);
        }
        PushAction::List => match client.pusher().await {
            Ok(info) => {
                let kind = match info.kind {
                    PusherKind::Webhook => "webhook",
                    PusherKind::WebPush => "web push",
                };
                match info.disabled {
                    None => say!("{kind}\t{}", info.url),
                    Some(why) => say!("{kind}\t{}\tdisabled: {why}", info.url),
                }
            }
            Err(e) if e.code() == Some(hearth_spec::ErrorCode::NotFound) => {
                say!("no push endpoint for this device; add one with `hearth-chat push add URL`");
            }
            Err(e) => return Err(e.into()),
        },
        PushAction::Remove => {
            client.delete_pusher().await?;
            say!("no more push notifications for this device");
        }
    }
    Ok(())
}

/// Shows a page of a room's history with receipt marks, and marks it read up to where this
/// device could read: a message sent after it joined that it cannot decrypt stops the read mark
/// (a device that cannot read a message never says it was read).
async fn history(
    client: &mut Client,
    local: &LocalMessages,
    (room, joined): (RoomSummary, Option<u64>),
    limit: usize,
    before: Option<u64>,
) -> anyhow::Result<()> {
    let page = client.history(&room.room_id, before, limit).await?;
    let me = client.user_id()?.clone();
    let marks = client.receipts(&room.room_id).await?;
    let others: Vec<_> = marks.iter().filter(|m| m.user_id != me).collect();
    for event in &page.events {
        let mine = event.sender == me && matches!(event.content, Content::Message { .. });
        if !mine || others.is_empty() {
            say!("{}", format_event(event, local));
            continue;
        }
        // Like the phones do it: delivered/read once every other member is there.
        let mark = if others.iter().all(|m| m.read >= event.seq) {
            "✓✓ read"
        } else if others.iter().all(|m| m.delivered >= event.seq) {
            "✓✓ delivered"
        } else {
            "✓ sent"
        };
        say!("{}  {mark}", format_event(event, local));
    }
    if let Some(before) = page.prev_before {
        say!(
            "(older: hearth-chat history {} --before {before})",
            room.room_id
        );
    }
    if before.is_none()
        && let Some(seq) = readable_upto(&page.events, local, &me, joined)
    {
        client.mark_read(&room.room_id, seq).await?;
    }
    Ok(())
}

/// The room `arg` names by id, when the hearth refused it because the user is no longer a
/// member.
fn left_room(arg: &str, refused: &anyhow::Error) -> Option<RoomId> {
    let code = refused.downcast_ref::<ClientError>()?.code()?;
    if code != hearth_spec::ErrorCode::Forbidden {
        return None;
    }
    arg.parse().ok()
}

/// A page of what this device kept of a room it is no longer in, newest last.
fn kept_history(
    local: &LocalMessages,
    room: &RoomId,
    limit: usize,
    before: Option<u64>,
) -> anyhow::Result<()> {
    let (page, older) = local.page(room, before, limit);
    if page.is_empty() && older.is_none() {
        bail!("you are not a member of {room}, and this device kept nothing of it");
    }
    say!("(you are not in {room} now: what this device read there)");
    for shown in page {
        say!("#{:<5} {}", shown.seq, sender_and_text(shown));
    }
    if let Some(before) = older {
        say!("(older: hearth-chat history {room} --before {before})");
    }
    Ok(())
}

/// The last event of `events` up to which this device has read every message meant for it.
fn readable_upto(
    events: &[EventView],
    local: &LocalMessages,
    me: &UserId,
    joined: Option<u64>,
) -> Option<u64> {
    let mut upto = None;
    for event in events {
        let meant_for_this_device = joined.is_none_or(|j| event.seq > j);
        let unread = matches!(event.content, Content::Message { .. })
            && event.sender != *me
            && meant_for_this_device
            && local.get(&event.room_id, event.seq).is_none();
        if unread {
            break;
        }
        upto = Some(event.seq);
    }
    upto
}

async fn resolve_room(client: &mut Client, arg: &str) -> anyhow::Result<RoomSummary> {
    if arg.starts_with('!') {
        let id: RoomId = arg.parse().context("invalid room id")?;
        return Ok(client.room(&id).await?);
    }
    let me = client.user_id()?.clone();
    let rooms = client.rooms().await?;
    let matches = rooms_named(&rooms, arg, &me)?;
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no room matches {arg:?}; `hearth-chat rooms` lists yours"),
        _ => bail!("{arg:?} matches several rooms; use the room id"),
    }
}

/// The rooms `arg` names: `@user` your 1:1 chat with them (`@` yourself: a 1:1 chat with nobody
/// else in it, not every 1:1 chat you are in), anything else a group's name, in any case.
fn rooms_named<'a>(
    rooms: &'a [RoomSummary],
    arg: &str,
    me: &UserId,
) -> anyhow::Result<Vec<&'a RoomSummary>> {
    if arg.starts_with('@') {
        let user: UserId = arg.parse().context("invalid user id")?;
        return Ok(rooms
            .iter()
            .filter(|r| r.kind == RoomKind::Direct && r.members.contains(&user))
            .filter(|r| user != *me || r.members.iter().all(|m| m == me))
            .collect());
    }
    Ok(rooms
        .iter()
        .filter(|r| {
            r.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(arg))
        })
        .collect())
}

fn display_name(room: &RoomSummary, me: &UserId) -> String {
    match (&room.name, room.kind) {
        (Some(name), _) => name.clone(),
        (None, RoomKind::Direct) => room
            .members
            .iter()
            .find(|m| *m != me)
            .map(|m| m.to_string())
            .unwrap_or_else(|| "(just you)".into()),
        (None, RoomKind::Group) => room.room_id.to_string(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// A notice from the hearth's admins: `#SEQ YYYY-MM-DD HH:MM UTC [new] text`.
fn format_notice(notice: &hearth_spec::client::Notice, new: bool) -> String {
    let secs = notice.ts / 1000;
    let (y, mo, d) = civil_date(secs / 86400);
    let (h, mi) = ((secs / 3600) % 24, (secs / 60) % 60);
    let new = if new { " new" } else { "" };
    format!(
        "notice #{} {y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC{new}: {}",
        notice.seq, notice.body
    )
}

/// The (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn format_event(event: &EventView, local: &LocalMessages) -> String {
    let secs = event.origin_ts / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let body = match &event.content {
        // What this device read before the hearth purged it, it keeps.
        Content::Purged {} => match local.get(&event.room_id, event.seq) {
            Some(shown) => format!("{}: {}", event.sender, message_text(shown)),
            None => format!(
                "{}: [removed from the hearth before this device read it]",
                event.sender
            ),
        },
        Content::Message { .. } => match local.get(&event.room_id, event.seq) {
            Some(shown) => format!("{}: {}", event.sender, message_text(shown)),
            None => format!(
                "{}: [encrypted; this device cannot read it (sent before it joined)]",
                event.sender
            ),
        },
        Content::Member {
            target,
            membership: Membership::Join,
        } if *target == event.sender => format!("* {target} joined"),
        Content::Member {
            target,
            membership: Membership::Join,
        } => format!("* {} added {target}", event.sender),
        Content::Member {
            target,
            membership: Membership::Leave,
        } if *target == event.sender => format!("* {target} left"),
        Content::Member {
            target,
            membership: Membership::Leave,
        } => format!("* {} removed {target}", event.sender),
        Content::Admin {
            target,
            admin: true,
        } => format!("* {} made {target} an admin", event.sender),
        Content::Admin { target, .. } if *target == event.sender => {
            format!("* {target} is no longer an admin")
        }
        Content::Admin { target, .. } => {
            format!("* {} took {target}'s admin role away", event.sender)
        }
        Content::Create {
            kind: RoomKind::Direct,
            ..
        } => format!("* {} started this chat", event.sender),
        Content::Create { name, .. } => format!(
            "* {} created the group {}",
            event.sender,
            name.as_deref().unwrap_or("")
        ),
        Content::Commit { epoch, .. } => {
            format!(
                "* {} changed the room's keys (epoch {})",
                event.sender,
                epoch + 1
            )
        }
    };
    format!("#{:<5} {h:02}:{m:02}:{s:02} {body}", event.seq)
}

/// Streams events live; with `room`, only that room, and lines from stdin are sent to it.
async fn follow(
    secure: &mut SecureClient,
    local: &mut LocalMessages,
    since: u64,
    room: Option<RoomSummary>,
    profile: &Path,
) -> anyhow::Result<()> {
    // The profile's other commands come here while this runs.
    let requests = profile_server::listen(profile);
    // Devices of this user that logged in since join the rooms first.
    secure.sync_own_devices().await?;
    catch_up(secure, local).await?;
    let me = secure.client().user_id()?.clone();
    let mut names: HashMap<RoomId, String> = secure
        .client()
        .rooms()
        .await?
        .iter()
        .map(|r| (r.room_id.clone(), display_name(r, &me)))
        .collect();
    let conn = secure.client().connect(Some(since)).await?;
    let (mut tx, mut rx) = conn.split();
    let (mut lines, mut screen) = match &room {
        Some(_) => chat_input::start(),
        None => (tokio::sync::mpsc::channel(1).1, chat_input::Screen::plain()),
    };
    let mut typing_open = room.is_some();
    // Whether the stream has caught up with what was waiting, and whether input has ended.
    let (mut synced, mut input_ended) = (false, false);
    // Keeps this user online for their contacts while following.
    let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            frame = rx.next() => {
                let Some(frame) = frame else { bail!("the hearth closed the connection") };
                match frame? {
                    ServerFrame::Event { cursor, event } => {
                        // Already processed (before the stream started) is shown from the store.
                        let received = secure.take(&event).await?;
                        secure.take_unreported();
                        keep_unflushed(secure, local)?;
                        secure.mls_mut().set_cursor(cursor)?;
                        if room.as_ref().is_none_or(|r| r.room_id == event.room_id) {
                            match &room {
                                Some(_) => {
                                    screen.out(format_event(&event, local));
                                    // Shown in the room being chatted in, and this device could
                                    // read it: it has been read (never claimed for what it cannot
                                    // decrypt).
                                    if let Received::Message { room, seq, own: false, .. } = &received {
                                        tx.frame(&ClientFrame::Read { room_id: room.clone(), seq: *seq }).await?;
                                    }
                                }
                                None => {
                                    if !names.contains_key(&event.room_id) {
                                        names = secure.client().rooms().await?.iter().map(|r| (r.room_id.clone(), display_name(r, &me))).collect();
                                    }
                                    let name = names.get(&event.room_id).cloned().unwrap_or_else(|| event.room_id.to_string());
                                    screen.out(format!("[{name}] {}", format_event(&event, local)));
                                }
                            }
                        }
                        // Acknowledged (a "delivered" receipt for the sender) once on disk:
                        // receiving and keeping did not wait for the disk.
                        secure.mls_mut().flush()?;
                        tx.ack(cursor).await?;
                    }
                    ServerFrame::Synced { .. } => {
                        if input_ended {
                            break;
                        }
                        synced = true;
                        let how = if room.is_some() { "type to send; Ctrl-D to end" } else { "Ctrl-C to stop" };
                        screen.note(format!("— up to date; following live ({how}) —"));
                    }
                    ServerFrame::Accepted { .. } => {}
                    ServerFrame::Error { message, .. } => screen.note(format!("error: {message}")),
                    ServerFrame::Pong { .. } => {}
                    ServerFrame::Receipt { room_id, user_id, kind, seq } => {
                        if room.as_ref().is_none_or(|r| r.room_id == room_id) && user_id != me {
                            let what = match kind { ReceiptKind::Delivered => "has received", ReceiptKind::Read => "has read" };
                            let name = names.get(&room_id).cloned().unwrap_or_else(|| room_id.to_string());
                            screen.note(format!("  ({user_id} {what} [{name}] up to #{seq})"));
                        }
                    }
                    ServerFrame::Typing { room_id, user_id, typing } => {
                        if room.as_ref().is_none_or(|r| r.room_id == room_id) {
                            let name = names.get(&room_id).cloned().unwrap_or_else(|| room_id.to_string());
                            if typing {
                                screen.note(format!("  [{name}] {user_id} is typing…"));
                            } else {
                                screen.note(format!("  [{name}] {user_id} stopped typing"));
                            }
                        }
                    }
                    ServerFrame::Presence { user_id, state, .. } => {
                        let state = match state { PresenceState::Online => "is online", PresenceState::Offline => "went offline" };
                        screen.note(format!("  ({user_id} {state})"));
                    }
                    ServerFrame::PushDisabled { reason, .. } => {
                        screen.note(format!("warning: push notifications for this device were disabled: {reason}"));
                    }
                    ServerFrame::Notice { notice } => {
                        screen.note(format!("from your hearth's admins: {}", format_notice(&notice, true)));
                        // Shown: read, on every device of the user.
                        if let Err(e) = secure.client().mark_notices_read(notice.seq).await {
                            screen.note(format!("error: cannot mark the notice read: {e}"));
                        }
                    }
                }
            }
            line = lines.recv(), if typing_open => {
                match (line, &room) {
                    (Some(chat_input::Input::Typing(typing)), Some(room)) => {
                        tx.frame(&ClientFrame::Typing { room_id: room.room_id.clone(), typing }).await?;
                    }
                    (Some(chat_input::Input::Line(text)), Some(room)) if !text.trim().is_empty() => {
                        if let Err(e) = secure.send_text(&room.room_id, &text).await {
                            screen.note(format!("error: {e}"));
                        }
                    }
                    (Some(_), _) => {}
                    // End of input in a chat (`printf 'hi\n' | hearth-chat chat ROOM`): what was
                    // typed has been sent; done once what had arrived is shown (and read).
                    (None, Some(_)) if synced => break,
                    (None, Some(_)) => {
                        input_ended = true;
                        typing_open = false;
                    }
                    (None, None) => typing_open = false,
                }
            }
            _ = heartbeat.tick() => tx.frame(&ClientFrame::Heartbeat).await?,
            accepted = async { requests.as_ref().expect("guarded").accept().await }, if requests.is_some() => {
                if let Ok((stream, _)) = accepted {
                    serve_request(secure, local, stream, profile).await;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tx.close().await;
    if requests.is_some() {
        let _ = std::fs::remove_file(profile_server::socket_path(profile));
    }
    Ok(())
}

/// Runs a command another `hearth-chat` on this profile handed over, with this device's state.
async fn serve_request(
    secure: &mut SecureClient,
    local: &mut LocalMessages,
    stream: tokio::net::UnixStream,
    profile: &Path,
) {
    let Ok(request) = profile_server::Request::read(stream).await else {
        return;
    };
    let args = std::iter::once("hearth-chat".to_owned()).chain(request.args.iter().cloned());
    let command = match Cli::try_parse_from(args) {
        Ok(cli) => cli.command,
        Err(e) => return request.answer(Some(e.to_string())).await,
    };
    if matches!(
        command,
        Command::Follow
            | Command::Chat { .. }
            | Command::Register { .. }
            | Command::Login { .. }
            | Command::Logout
    ) {
        let e = "error: this profile's device is busy with `follow` or `chat` in another terminal; that command needs it to itself (`hearth-chat send ROOM TEXT` works meanwhile)";
        return request.answer(Some(e.into())).await;
    }
    request.capture();
    let result = Box::pin(logged_in(secure, local, command, profile)).await;
    let error = result.err().map(|e| error_line(&e));
    secure.take_unreported();
    if let Err(e) = keep_decrypted(secure, local) {
        tracing::warn!(error = %e, "cannot keep what was decrypted; kept in the device state until the next command");
    }
    // The command may have refreshed the session: a spent refresh token left on disk would log
    // the device out at its next use.
    if let Err(e) = save(profile, secure.client()) {
        tracing::warn!(error = %e, "cannot save the session");
    }
    request.answer(error).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_names_your_one_to_one_chat_with_them_and_yourself_names_none_of_the_others() {
        let user = |name: &str| UserId::parse(&format!("@{name}:localhost")).unwrap();
        let room = |id: &str, kind, name: Option<&str>, members: &[&str]| RoomSummary {
            room_id: RoomId::parse(&format!("!{id}:localhost")).unwrap(),
            kind,
            name: name.map(str::to_owned),
            members: members.iter().map(|m| user(m)).collect(),
            last_seq: 0,
            unread: 0,
            epoch: 0,
            admins: Vec::new(),
        };
        let rooms = [
            room("a", RoomKind::Direct, None, &["bob", "alice"]),
            room("c", RoomKind::Direct, None, &["bob", "carol"]),
            room(
                "f",
                RoomKind::Group,
                Some("Friends"),
                &["bob", "alice", "carol"],
            ),
        ];
        let ids = |arg: &str| -> Vec<String> {
            rooms_named(&rooms, arg, &user("bob"))
                .unwrap()
                .iter()
                .map(|r| r.room_id.to_string())
                .collect()
        };
        assert_eq!(ids("@alice:localhost"), ["!a:localhost"]);
        assert_eq!(ids("@carol:localhost"), ["!c:localhost"]);
        assert!(ids("@bob:localhost").is_empty());
        assert_eq!(ids("friends"), ["!f:localhost"]);
        let alone = [room("n", RoomKind::Direct, None, &["bob"])];
        let named = rooms_named(&alone, "@bob:localhost", &user("bob")).unwrap();
        assert_eq!(named.len(), 1);
        assert!(rooms_named(&rooms, "@not a user", &user("bob")).is_err());
    }

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_789), (2026, 12, 2));
        let notice = hearth_spec::client::Notice {
            seq: 4,
            ts: 20_789 * 86_400_000 + (14 * 60 + 5) * 60_000,
            body: "Maintenance tonight".into(),
        };
        assert_eq!(
            format_notice(&notice, true),
            "notice #4 2026-12-02 14:05 UTC new: Maintenance tonight"
        );
    }
}
