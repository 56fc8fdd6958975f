// What the wasm device hands the page, as parsed from its JSON.

export interface RoomSummary {
  room_id: string;
  kind: "direct" | "group";
  name?: string;
  members: string[];
  last_seq: number;
  unread: number;
  /** A group's admins: who remove members and make others admins. */
  admins?: string[];
}

export interface Attachment {
  media_id: string;
  server: string;
  size: number;
  name: string;
}

export interface Line {
  room: string;
  seq: number;
  sender: string;
  device: string;
  ts: number;
  kind: "message" | "unreadable" | "purged" | "member" | "created" | "keys";
  text: string;
  attachment?: Attachment;
  copy: boolean;
}

/** A member's high-water marks in a room. */
export interface Marks {
  delivered: number;
  read: number;
}

export interface Presence {
  state: "online" | "offline";
  last_seen_ts?: number;
}

/** A notice from the hearth's admins (plain text the hearth wrote). */
export interface Notice {
  seq: number;
  ts: number;
  body: string;
}
