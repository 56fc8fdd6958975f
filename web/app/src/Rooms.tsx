import { useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import type { RoomSummary } from "./types";
import { roomName, userIdOf } from "./format";

export function Rooms(props: {
  device: Device;
  rooms: RoomSummary[];
  open: string | null;
  onOpen(id: string): void;
  onCreated(id: string): void;
  onError(e: unknown): void;
}) {
  const { device } = props;
  const [who, setWho] = useState("");
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);

  async function start(e: Event) {
    e.preventDefault();
    const members = who
      .split(/[\s,]+/)
      .filter(Boolean)
      .map((u) => userIdOf(u, device.userId));
    if (!members.length) return;
    setBusy(true);
    try {
      const group = name.trim() !== "" || members.length > 1;
      const created = JSON.parse(
        await device.createRoom(group ? "group" : "direct", group ? name.trim() || undefined : undefined, JSON.stringify(members)),
      );
      setWho("");
      setName("");
      props.onCreated(created.room_id);
    } catch (err) {
      props.onError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <nav>
      <form class="new-chat" onSubmit={start}>
        <input
          id="new-chat-members"
          placeholder="Chat with… (bob, @carol:example.org)"
          value={who}
          onInput={(e) => setWho(e.currentTarget.value)}
        />
        <input
          id="new-chat-name"
          placeholder="Group name (optional)"
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
        <button id="new-chat" type="submit" disabled={busy}>Start</button>
      </form>
      <ul class="rooms">
        {props.rooms.map((r) => (
          <li key={r.room_id}>
            <button
              class={"room" + (r.room_id === props.open ? " selected" : "")}
              data-room={r.room_id}
              onClick={() => props.onOpen(r.room_id)}
            >
              <span class="name">{roomName(r, device.userId)}</span>
              {r.unread > 0 && <span class="unread" title="Unread">{r.unread}</span>}
            </button>
          </li>
        ))}
      </ul>
    </nav>
  );
}
