import { useEffect, useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import type { RoomSummary } from "./types";
import { roomName, sentence, shortName } from "./format";

interface Found {
  room: string;
  seq: number;
  sender?: string;
  text: string;
  attachment?: { name: string };
}

/**
 * Search over what this device read. The hearth holds only ciphertext, so the index lives in
 * the browser (built by the wasm device from the messages it kept).
 */
export function Search(props: {
  device: Device;
  rooms: RoomSummary[];
  onFound(room: string, seq: number): void;
  onError(e: unknown): void;
}) {
  const [query, setQuery] = useState("");
  const [found, setFound] = useState<Found[] | null>(null);

  useEffect(() => {
    if (!query.trim()) {
      setFound(null);
      return;
    }
    const timer = window.setTimeout(() => {
      props.device.search(query, 50).then(
        (text: string) => setFound(JSON.parse(text)),
        (e: unknown) => props.onError(sentence(e)),
      );
    }, 150);
    return () => window.clearTimeout(timer);
  }, [query]);

  const name = (id: string) => {
    const room = props.rooms.find((r) => r.room_id === id);
    return room ? roomName(room, props.device.userId) : id;
  };

  return (
    <div class="search">
      <input
        id="search"
        type="search"
        placeholder="Search your messages"
        value={query}
        onInput={(e) => setQuery(e.currentTarget.value)}
        onKeyDown={(e) => e.key === "Escape" && setQuery("")}
      />
      {found && (
        <ul class="results" id="results">
          {found.length === 0 && <li class="muted">Nothing you have read matches.</li>}
          {found.map((f) => (
            <li key={f.room + f.seq}>
              <button
                class="result"
                onClick={() => {
                  setQuery("");
                  props.onFound(f.room, f.seq);
                }}
              >
                <small>
                  {name(f.room)} · {f.sender ? shortName(f.sender) : ""}
                </small>
                <span>{f.text || f.attachment?.name}</span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
