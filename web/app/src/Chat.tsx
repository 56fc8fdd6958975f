import { useEffect, useRef, useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import type { Line, Marks, Notice, Presence, RoomSummary } from "./types";
import { Live, type Signal } from "./live";
import { Rooms } from "./Rooms";
import { Timeline } from "./Timeline";
import { Search } from "./Search";
import { Devices } from "./Devices";
import { Notifications } from "./Notifications";
import { Notices } from "./Notices";
import { closeNotifications, forgetSubscription } from "./push";
import { enc, roomName, sentence } from "./format";

/** How long a typing signal shows without being renewed (the hearth expires it after 5 s). */
const TYPING_SHOWN_MS = 6000;

/** The room named in the address (`#room=ROOM`), taken out of it so a reload starts afresh. */
function roomInAddress(): string | null {
  const room = new URLSearchParams(location.hash.slice(1)).get("room");
  if (room) history.replaceState(null, "", location.pathname);
  return room;
}

/** The logged-in app: rooms on the left, the open room on the right (one at a time on a phone). */
export function Chat(props: { device: Device; onLogout(why?: string): void }) {
  const { device } = props;
  const [rooms, setRooms] = useState<RoomSummary[]>([]);
  // A notification clicked while no tab was open brings the page up at /#room=ROOM.
  const [open, setOpen] = useState<string | null>(roomInAddress);
  // A message to show and highlight when the room opens (from a search).
  const [focus, setFocus] = useState<{ room: string; seq: number } | null>(null);
  const [arrived, setArrived] = useState<Line[]>([]);
  const [state, setState] = useState<"connecting" | "live" | "offline">("connecting");
  const [error, setError] = useState("");
  // Per room, per member: receipt marks; who is typing (until when); per user: presence.
  const [marks, setMarks] = useState<Record<string, Record<string, Marks>>>({});
  const [typing, setTyping] = useState<Record<string, Record<string, number>>>({});
  const [presence, setPresence] = useState<Record<string, Presence>>({});
  // Notices not dismissed, oldest first (each connection sends the unread ones again).
  const [notices, setNotices] = useState<Notice[]>([]);
  const live = useRef<Live | null>(null);
  const openRef = useRef<string | null>(null);
  openRef.current = open;

  async function refreshRooms() {
    try {
      const list: RoomSummary[] = JSON.parse(await device.rooms());
      setRooms(list);
      // For hearth-bench web: when the room list is first on screen after a load.
      if (list.length && !performance.getEntriesByName("rooms-rendered").length) {
        requestAnimationFrame(() => performance.mark("rooms-rendered"));
      }
    } catch (e) {
      setError(sentence(e));
    }
  }

  function mergeMarks(room: string, user: string, add: Partial<Marks>) {
    setMarks((all) => {
      const old = all[room]?.[user] ?? { delivered: 0, read: 0 };
      const next = {
        delivered: Math.max(old.delivered, add.delivered ?? 0, add.read ?? 0),
        read: Math.max(old.read, add.read ?? 0),
      };
      return { ...all, [room]: { ...all[room], [user]: next } };
    });
  }

  function signal(s: Signal) {
    switch (s.type) {
      case "receipt":
        mergeMarks(s.room_id, s.user_id, { [s.kind]: s.seq });
        break;
      case "typing":
        setTyping((all) => {
          const room = { ...all[s.room_id] };
          if (s.typing) room[s.user_id] = Date.now() + TYPING_SHOWN_MS;
          else delete room[s.user_id];
          return { ...all, [s.room_id]: room };
        });
        break;
      case "presence":
        setPresence((all) => ({ ...all, [s.user_id]: { state: s.state, last_seen_ts: s.last_seen_ts } }));
        break;
    }
  }

  // Typing signals that were not renewed fade out.
  useEffect(() => {
    const timer = window.setInterval(() => {
      const now = Date.now();
      setTyping((all) => {
        let changed = false;
        const next: typeof all = {};
        for (const [room, users] of Object.entries(all)) {
          next[room] = {};
          for (const [user, until] of Object.entries(users)) {
            if (until > now) next[room][user] = until;
            else changed = true;
          }
        }
        return changed ? next : all;
      });
    }, 1000);
    return () => window.clearInterval(timer);
  }, []);

  // The open room's receipts, and the presence of its other members.
  useEffect(() => {
    const room = rooms.find((r) => r.room_id === open);
    if (!room) return;
    device
      .request("GET", `/v1/rooms/${enc(room.room_id)}/receipts`)
      .then((text: string) => {
        for (const m of JSON.parse(text)) mergeMarks(room.room_id, m.user_id, m);
      })
      .catch((e: unknown) => setError(sentence(e)));
    for (const user of room.members.filter((m) => m !== device.userId)) {
      device
        .request("GET", `/v1/presence/${enc(user)}`)
        .then((text: string) => {
          const p = JSON.parse(text);
          setPresence((all) => ({ ...all, [user]: { state: p.state, last_seen_ts: p.last_seen_ts } }));
        })
        .catch(() => {});
    }
  }, [open, rooms.length]);

  useEffect(() => {
    let stopped = false;
    let refresh: number | undefined;
    performance.mark("sync-start");
    device
      .sync()
      .then(() => performance.mark("sync-done"))
      .catch((e: unknown) => setError(sentence(e)))
      .then(() => {
        if (stopped) return;
        refreshRooms();
        live.current = new Live(device, {
          onLines(lines) {
            setArrived(lines);
            const read = lines.filter(
              (l) => l.room === openRef.current && l.kind === "message" && l.sender !== device.userId,
            );
            if (read.length) {
              const last = read[read.length - 1];
              live.current?.send({ type: "read", room_id: last.room, seq: last.seq });
            }
            // Unread counts and new rooms, at most every 300 ms while messages stream in.
            window.clearTimeout(refresh);
            refresh = window.setTimeout(refreshRooms, 300);
          },
          onSignal: signal,
          onNotice: (notice) =>
            setNotices((all) =>
              all.some((n) => n.seq === notice.seq)
                ? all
                : [...all, notice].sort((a, b) => a.seq - b.seq),
            ),
          onState: setState,
          onError: (e) => setError(sentence(e)),
          onEnded: () => {
            // Removed from another device (or the account was closed): this one is gone.
            device
              .forget()
              .finally(() => props.onLogout("This device was logged out. Log in again to use it."));
          },
        });
      });
    return () => {
      stopped = true;
      live.current?.close();
    };
  }, [device]);

  // A notification clicked while this tab is open: the service worker asks it to open the chat.
  useEffect(() => {
    if (!("serviceWorker" in navigator)) return;
    const opened = (message: MessageEvent) => {
      if (message.data?.type === "open-room" && typeof message.data.room_id === "string") {
        setFocus(null);
        setOpen(message.data.room_id);
      }
    };
    navigator.serviceWorker.addEventListener("message", opened);
    return () => navigator.serviceWorker.removeEventListener("message", opened);
  }, []);

  // What is on screen needs no notification.
  useEffect(() => {
    if (open) closeNotifications(open);
  }, [open]);

  async function logout() {
    live.current?.close();
    try {
      // The hearth forgets the device and its endpoint; the browser forgets its subscription.
      await forgetSubscription().catch(() => {});
      await device.logout();
    } finally {
      props.onLogout();
    }
  }

  const room = rooms.find((r) => r.room_id === open);
  return (
    <div class={"chat" + (open ? " room-open" : "")}>
      <aside>
        <header>
          <strong>{device.userId}</strong>
          <span class={"status " + state} title="Connection">{state === "live" ? "online" : state}</span>
        </header>
        <Search
          device={device}
          rooms={rooms}
          onFound={(room, seq) => {
            setFocus({ room, seq });
            setOpen(room);
          }}
          onError={(e) => setError(sentence(e))}
        />
        <Rooms
          device={device}
          rooms={rooms}
          open={open}
          onOpen={(id) => {
            setFocus(null);
            setOpen(id);
            refreshRooms();
          }}
          onCreated={(id) => {
            refreshRooms();
            setOpen(id);
          }}
          onError={(e) => setError(sentence(e))}
        />
        <footer>
          <details>
            <summary>This device</summary>
            <p>
              Device <code>{device.deviceId}</code>
              <br />
              Safety fingerprint: <code id="fingerprint">{device.fingerprint}</code>
            </p>
            <Notifications device={device} onError={(e) => setError(sentence(e))} />
            <Devices device={device} onError={(e) => setError(sentence(e))} />
            <button id="logout" onClick={logout}>Log out</button>
          </details>
        </footer>
      </aside>
      <main>
        {error && (
          <p class="error" role="alert" onClick={() => setError("")}>
            {error} <small>(click to dismiss)</small>
          </p>
        )}
        <Notices
          device={device}
          notices={notices}
          onDismissed={(seq) => setNotices((all) => all.filter((n) => n.seq > seq))}
          onError={(e) => setError(sentence(e))}
        />
        {room ? (
          <Timeline
            key={room.room_id + (focus?.room === room.room_id ? `@${focus.seq}` : "")}
            focus={focus?.room === room.room_id ? focus.seq : undefined}
            onLatest={() => setFocus(null)}
            device={device}
            room={room}
            title={roomName(room, device.userId)}
            arrived={arrived}
            marks={marks[room.room_id] ?? {}}
            typing={Object.keys(typing[room.room_id] ?? {}).filter((u) => u !== device.userId)}
            presence={presence}
            onBack={() => setOpen(null)}
            onRead={(seq) => live.current?.send({ type: "read", room_id: room.room_id, seq })}
            onTyping={(typing) => live.current?.send({ type: "typing", room_id: room.room_id, typing })}
            onError={(e) => setError(sentence(e))}
            onLeft={() => {
              setOpen(null);
              refreshRooms();
            }}
          />
        ) : (
          <p class="empty">Choose a chat, or start one.</p>
        )}
      </main>
    </div>
  );
}
