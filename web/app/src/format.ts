import type { RoomSummary } from "./types";

/** The localpart of a user id: "@alice:example.org" → "alice". */
export function shortName(user: string): string {
  return user.startsWith("@") ? user.slice(1).split(":")[0] : user;
}

/** A room's name as its members see it: the group's name, or the other person in a 1:1. */
export function roomName(room: RoomSummary, me: string): string {
  if (room.name) return room.name;
  const others = room.members.filter((m) => m !== me);
  return others.length ? others.map(shortName).join(", ") : "Just you";
}

export function clock(ts: number): string {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** An error as a sentence for the person using the app. */
export function sentence(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  if (/Failed to fetch|NetworkError/i.test(text)) {
    return "Cannot reach your hearth. Check your connection; we will keep trying.";
  }
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : capital + ".";
}

/** This browser as the device list names it: "Firefox on Linux", "Safari on iPhone". */
export function browserName(userAgent: string): string {
  const browser = /Edg\//.test(userAgent)
    ? "Edge"
    : /OPR\//.test(userAgent)
      ? "Opera"
      : /Firefox\//.test(userAgent)
        ? "Firefox"
        : /Chromium\//.test(userAgent)
          ? "Chromium"
          : /Chrome\//.test(userAgent)
            ? "Chrome"
            : /Safari\//.test(userAgent)
              ? "Safari"
              : "A browser";
  const system = /iPhone/.test(userAgent)
    ? "iPhone"
    : /iPad/.test(userAgent)
      ? "iPad"
      : /Android/.test(userAgent)
        ? "Android"
        : /Windows/.test(userAgent)
          ? "Windows"
          : /CrOS/.test(userAgent)
            ? "ChromeOS"
            : /Mac OS X|Macintosh/.test(userAgent)
              ? "macOS"
              : /Linux/.test(userAgent)
                ? "Linux"
                : "";
  return system ? `${browser} on ${system}` : browser;
}

/** A user id from what someone typed: "bob" → "@bob:<this hearth>". */
export function userIdOf(typed: string, me: string): string {
  const t = typed.trim();
  if (t.startsWith("@")) return t;
  return `@${t}:${me.split(":").slice(1).join(":")}`;
}

/** "online", "last seen 14:05", "last seen 3 Dec", or "" when hidden or never seen. */
export function lastSeen(p: { state: string; last_seen_ts?: number } | undefined): string {
  if (!p) return "";
  if (p.state === "online") return "online";
  if (!p.last_seen_ts) return "";
  const d = new Date(p.last_seen_ts);
  const today = new Date().toDateString() === d.toDateString();
  return "last seen " + (today ? clock(p.last_seen_ts) : d.toLocaleDateString([], { day: "numeric", month: "short" }));
}

/** Percent-encodes an id for a path. */
export const enc = encodeURIComponent;
