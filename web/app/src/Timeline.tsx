import { useEffect, useRef, useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import type { Line, Marks, Presence, RoomSummary } from "./types";
import { clock, lastSeen, shortName, userIdOf } from "./format";
import { AttachmentView } from "./Attachment";

const PAGE = 50;

export function Timeline(props: {
  device: Device;
  room: RoomSummary;
  title: string;
  arrived: Line[];
  /** A message to show (loaded around it) and highlight. */
  focus?: number;
  onLatest(): void;
  marks: Record<string, Marks>;
  typing: string[];
  presence: Record<string, Presence>;
  onBack(): void;
  onRead(seq: number): void;
  onTyping(typing: boolean): void;
  onError(e: unknown): void;
  onLeft(): void;
}) {
  const { device, room } = props;
  const [lines, setLines] = useState<Line[]>([]);
  const [before, setBefore] = useState<number | null | undefined>(undefined);
  const [draft, setDraft] = useState("");
  const [sending, setSending] = useState(0);
  const [upload, setUpload] = useState<{ name: string; percent: number } | null>(null);
  const [fingerprints, setFingerprints] = useState<{ user: string; device: string; fingerprint: string }[] | null>(null);
  const [people, setPeople] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const list = useRef<HTMLOListElement>(null);
  const typingUntil = useRef(0);

  async function page(from?: number) {
    try {
      const got = JSON.parse(await device.history(room.room_id, from, PAGE));
      setLines((old) => merge(got.lines, old));
      setBefore(got.prev_before ?? null);
      // Read up to the newest message this device could decrypt: never claims to have read what
      // it cannot (as hearth-chat).
      const readable = (got.lines as Line[]).filter((l) => l.kind === "message");
      if (from === undefined && readable.length) props.onRead(readable[readable.length - 1].seq);
    } catch (e) {
      props.onError(e);
    }
  }

  useEffect(() => {
    // Around the focused message: it and what came just after it, then older on request.
    page(props.focus === undefined ? undefined : props.focus + PAGE / 2);
  }, [room.room_id]);

  useEffect(() => {
    if (props.focus === undefined) return;
    list.current?.querySelector(`[data-seq="${props.focus}"]`)?.scrollIntoView({ block: "center" });
  }, [lines.length]);

  useEffect(() => {
    const mine = props.arrived.filter((l) => l.room === room.room_id);
    if (mine.length) setLines((old) => merge(mine, old));
  }, [props.arrived]);

  useEffect(() => {
    const el = list.current;
    if (el && props.focus === undefined) el.scrollTop = el.scrollHeight;
  }, [lines.length && lines[lines.length - 1].seq]);

  async function send(e: Event) {
    e.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft("");
    typingUntil.current = 0;
    props.onTyping(false);
    setSending((n) => n + 1);
    try {
      await device.sendText(room.room_id, text);
    } catch (err) {
      setDraft(text);
      props.onError(err);
    } finally {
      setSending((n) => n - 1);
    }
  }

  async function attach(file: File) {
    const caption = draft.trim();
    setDraft("");
    setUpload({ name: file.name, percent: 0 });
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      await device.sendFile(room.room_id, file.name, bytes, caption, (sent: number, total: number) =>
        setUpload({ name: file.name, percent: Math.floor((100 * sent) / Math.max(total, 1)) }),
      );
    } catch (e) {
      setDraft(caption);
      props.onError(e);
    } finally {
      setUpload(null);
      if (fileInput.current) fileInput.current.value = "";
    }
  }

  function typed(value: string) {
    setDraft(value);
    // Renewed every 3 s while typing; the hearth expires it after 5 s.
    const now = Date.now();
    if (value && now > typingUntil.current) {
      typingUntil.current = now + 3000;
      props.onTyping(true);
    }
  }

  async function invite() {
    const who = prompt("Invite whom? (bob or @bob:example.org)");
    if (!who) return;
    try {
      await device.invite(room.room_id, userIdOf(who, device.userId));
    } catch (e) {
      props.onError(e);
    }
  }

  async function showFingerprints() {
    try {
      setFingerprints(fingerprints ? null : JSON.parse(await device.memberFingerprints(room.room_id)));
    } catch (e) {
      props.onError(e);
    }
  }

  async function removeMember(user: string) {
    if (!confirm(`Remove ${shortName(user)} from ${props.title}? They will not read what is sent after.`)) return;
    try {
      await device.removeMember(room.room_id, user);
    } catch (e) {
      props.onError(e);
    }
  }

  async function makeAdmin(user: string) {
    try {
      await device.request(
        "POST",
        `/v1/rooms/${encodeURIComponent(room.room_id)}/admins`,
        JSON.stringify({ user_id: user, admin: true }),
      );
    } catch (e) {
      props.onError(e);
    }
  }

  async function leave() {
    if (!confirm(`Leave ${props.title}? You will not read what is sent after.`)) return;
    try {
      await device.leave(room.room_id);
      props.onLeft();
    } catch (e) {
      props.onError(e);
    }
  }

  const others = room.members.filter((m) => m !== device.userId);
  const admins = room.admins ?? [];
  const iAmAdmin = admins.includes(device.userId);
  /** ✓ sent, ✓✓ delivered (to every other member), ✓✓ read (by every other member). */
  function tick(seq: number): [string, string] {
    const marks = others.map((u) => props.marks[u] ?? { delivered: 0, read: 0 });
    if (others.length && marks.every((m) => m.read >= seq)) return ["✓✓", "read"];
    if (others.length && marks.every((m) => m.delivered >= seq)) return ["✓✓", "delivered"];
    return ["✓", "sent"];
  }
  const status =
    room.kind === "direct" && others.length === 1
      ? lastSeen(props.presence[others[0]])
      : `${room.members.length} members`;

  return (
    <section class="timeline">
      <header>
        <button class="back" onClick={props.onBack} aria-label="Back to chats">←</button>
        <h2 id="room-title">{props.title}</h2>
        <span class="muted" id="room-status">{status}</span>
        <button id="members" onClick={showFingerprints} title="Compare these with what each person's app shows">
          Keys
        </button>
        {room.kind === "group" && (
          <button id="people" onClick={() => setPeople(!people)}>
            People
          </button>
        )}
        {room.kind === "group" && (
          <button id="invite" onClick={invite}>
            Invite
          </button>
        )}
        <button id="leave" onClick={leave}>
          Leave
        </button>
      </header>
      {people && (
        <div class="people" id="people-list">
          <ul>
            {room.members.map((m) => (
              <li key={m} data-user={m}>
                <strong>{shortName(m)}</strong> <small>{m}</small>
                {m === device.userId && " (you)"}
                {admins.includes(m) && <span class="admin">admin</span>}
                {iAmAdmin && m !== device.userId && (
                  <span class="actions">
                    {!admins.includes(m) && (
                      <button class="make-admin" onClick={() => makeAdmin(m)}>
                        Make admin
                      </button>
                    )}
                    <button class="remove-member" onClick={() => removeMember(m)}>
                      Remove
                    </button>
                  </span>
                )}
              </li>
            ))}
          </ul>
          {!iAmAdmin && admins.length > 0 && (
            <p class="muted">Only the group's admins ({admins.map(shortName).join(", ")}) add admins and remove people.</p>
          )}
        </div>
      )}
      {fingerprints && (
        <div class="fingerprints" id="fingerprints">
          <p class="muted">
            Every device that can read this room. Compare each safety fingerprint with what that
            person's app shows (in person or on a call): if they match, nobody is in between.
          </p>
          <ul>
            {fingerprints.map((f) => (
              <li key={f.user + f.device}>
                <strong>{shortName(f.user)}</strong> <small>{f.device}</small>
                <br />
                <code>{f.fingerprint}</code>
              </li>
            ))}
          </ul>
        </div>
      )}
      <ol class="lines" ref={list} id="lines">
        {before !== null && before !== undefined && (
          <li class="older">
            <button id="older" onClick={() => page(before)}>Show older messages</button>
          </li>
        )}
        {lines.map((l) => (
          <li
            key={l.seq}
            class={"line " + l.kind + (l.sender === device.userId ? " own" : "") + (l.seq === props.focus ? " focus" : "")}
            data-seq={l.seq}
          >
            {l.kind === "message" || l.kind === "unreadable" || l.kind === "purged" ? (
              <>
                <span class="who">{shortName(l.sender)}</span>
                <span class="text">{l.copy ? "↻ (sent again for members who could not read it)" : l.text}</span>
                {l.attachment && <AttachmentView device={device} attachment={l.attachment} />}
                <time>
                  {clock(l.ts)}
                  {l.sender === device.userId && l.kind === "message" && (
                    <span class={"tick " + tick(l.seq)[1]} title={tick(l.seq)[1]}>
                      {" " + tick(l.seq)[0]}
                    </span>
                  )}
                </time>
              </>
            ) : (
              <span class="event">{l.text}</span>
            )}
          </li>
        ))}
      </ol>
      <p class="typing" id="typing" aria-live="polite">
        {props.typing.length > 0 &&
          `${props.typing.map(shortName).join(", ")} ${props.typing.length > 1 ? "are" : "is"} typing…`}
      </p>
      {props.focus !== undefined && (
        <button class="latest" id="latest" onClick={props.onLatest}>
          Back to the latest messages ↓
        </button>
      )}
      {upload && (
        <p class="upload" id="upload">
          Sending {upload.name}… <progress max={100} value={upload.percent} /> {upload.percent}%
        </p>
      )}
      <form class="composer" onSubmit={send}>
        <input
          type="file"
          id="file"
          ref={fileInput}
          hidden
          onChange={(e) => {
            const file = e.currentTarget.files?.[0];
            if (file) attach(file);
          }}
        />
        <button
          type="button"
          class="attach"
          aria-label="Attach a file"
          title="Attach a file"
          disabled={upload !== null}
          onClick={() => fileInput.current?.click()}
        >
          <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
            <path
              fill="none"
              stroke="currentColor"
              stroke-width="2"
              stroke-linecap="round"
              d="M21 11.5l-8.5 8.5a5 5 0 01-7-7l9-9a3.5 3.5 0 015 5l-9 9a2 2 0 01-3-3l8-8"
            />
          </svg>
        </button>
        <input
          id="composer"
          placeholder={`Message ${props.title}`}
          value={draft}
          onInput={(e) => typed(e.currentTarget.value)}
          autocomplete="off"
        />
        <button id="send" type="submit">{sending ? "Sending…" : "Send"}</button>
      </form>
    </section>
  );
}

/** Lines by sequence number, each once, oldest first; commits are not shown. */
function merge(add: Line[], old: Line[]): Line[] {
  const bySeq = new Map<number, Line>();
  for (const l of old) bySeq.set(l.seq, l);
  for (const l of add) if (l.kind !== "keys") bySeq.set(l.seq, l);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}
