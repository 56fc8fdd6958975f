import { useEffect, useRef, useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import type { Line, RoomSummary } from "./types";
import { Live } from "./live";
import { Rooms } from "./Rooms";
import { Timeline } from "./Timeline";
import { roomName, sentence } from "./format";

/** The logged-in app: rooms on the left, the open room on the right (one at a time on a phone). */
export function Chat(props: { device: Device; onLogout(): void }) {
  const { device } = props;
  const [rooms, setRooms] = useState<RoomSummary[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [arrived, setArrived] = useState<Line | null>(null);
  const [state, setState] = useState<"connecting" | "live" | "offline">("connecting");
  const [error, setError] = useState("");
  const live = useRef<Live | null>(null);
  const openRef = useRef<string | null>(null);
  openRef.current = open;

  async function refreshRooms() {
    try {
      setRooms(JSON.parse(await device.rooms()));
    } catch (e) {
      setError(sentence(e));
    }
  }

  useEffect(() => {
    let stopped = false;
    let refresh: number | undefined;
    device
      .sync()
      .catch((e: unknown) => setError(sentence(e)))
      .then(() => {
        if (stopped) return;
        refreshRooms();
        live.current = new Live(device, {
          onLine(line) {
            setArrived(line);
            if (line.room === openRef.current && line.kind === "message" && line.sender !== device.userId) {
              live.current?.send({ type: "read", room_id: line.room, seq: line.seq });
            }
            // Unread counts and new rooms, at most every 300 ms while messages stream in.
            window.clearTimeout(refresh);
            refresh = window.setTimeout(refreshRooms, 300);
          },
          onState: setState,
          onError: (e) => setError(sentence(e)),
        });
      });
    return () => {
      stopped = true;
      live.current?.close();
    };
  }, [device]);

  async function logout() {
    live.current?.close();
    try {
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
        <Rooms
          device={device}
          rooms={rooms}
          open={open}
          onOpen={(id) => {
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
            <button onClick={logout}>Log out</button>
          </details>
        </footer>
      </aside>
      <main>
        {error && (
          <p class="error" role="alert" onClick={() => setError("")}>
            {error} <small>(click to dismiss)</small>
          </p>
        )}
        {room ? (
          <Timeline
            key={room.room_id}
            device={device}
            room={room}
            title={roomName(room, device.userId)}
            arrived={arrived}
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
