// The live WebSocket: frames in inbox order, each handed to the device one at a time, then
// acknowledged. Reconnects with backoff; every connection starts after the device's cursor, so
// nothing is missed or shown twice.
import type { Device } from "../pkg/hearth_web.js";
import type { Line, Notice } from "./types";

/** A receipt, typing or presence frame (ephemeral: shown, never stored). */
export type Signal =
  | { type: "receipt"; room_id: string; user_id: string; kind: "delivered" | "read"; seq: number }
  | { type: "typing"; room_id: string; user_id: string; typing: boolean }
  | { type: "presence"; user_id: string; state: "online" | "offline"; last_seen_ts?: number };

export interface LiveHandlers {
  /** Lines for event frames the device took, in order (several when they came together). */
  onLines(lines: Line[]): void;
  onSignal(signal: Signal): void;
  /** A notice from the hearth's admins: live, and on each connection every unread one. */
  onNotice(notice: Notice): void;
  onState(state: "connecting" | "live" | "offline"): void;
  onError(error: unknown): void;
  /** The hearth ended this device's session (logged out elsewhere, removed, deactivated). */
  onEnded(): void;
}

export class Live {
  private socket?: WebSocket;
  /** Event frames not yet handed to the device, in order; taken together while it works. */
  private waiting: string[] = [];
  private working = false;
  private closed = false;
  private backoff = 500;
  private heartbeat?: number;

  constructor(private device: Device, private handlers: LiveHandlers) {
    this.connect();
  }

  private async connect() {
    if (this.closed) return;
    this.handlers.onState("connecting");
    let params: { token: string; cursor: number };
    try {
      params = JSON.parse(await this.device.socketParams());
    } catch (e) {
      if (e instanceof Error && e.name === "unauthorized") {
        this.closed = true;
        this.handlers.onEnded();
        return;
      }
      this.handlers.onError(e);
      this.retry();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/ws?since=${params.cursor}&access_token=${encodeURIComponent(params.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onmessage = (message) => this.frame(String(message.data));
    socket.onclose = () => {
      if (this.socket === socket) this.retry();
    };
  }

  private retry() {
    window.clearInterval(this.heartbeat);
    if (this.closed) return;
    this.handlers.onState("offline");
    window.setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 15000);
  }

  private frame(text: string) {
    const frame = JSON.parse(text);
    switch (frame.type) {
      case "event":
        this.waiting.push(text);
        if (!this.working) this.work();
        break;
      case "synced":
        this.backoff = 500;
        this.handlers.onState("live");
        window.clearInterval(this.heartbeat);
        this.heartbeat = window.setInterval(() => this.send({ type: "heartbeat" }), 5000);
        break;
      case "receipt":
      case "typing":
      case "presence":
        this.handlers.onSignal(frame as Signal);
        break;
      case "notice":
        this.handlers.onNotice(frame.notice as Notice);
        break;
      case "push_disabled":
        this.handlers.onError(
          new Error(
            "Notifications for this device stopped: the browser's push service kept refusing them. Turn them on again under This device",
          ),
        );
        break;
      case "error":
        if (frame.code === "unauthorized") {
          this.close();
          this.handlers.onEnded();
          return;
        }
        this.handlers.onError(new Error(frame.message));
        break;
    }
  }

  /**
   * Hands the waiting event frames to the device, all that arrived meanwhile in one call (one
   * wait for the disk per batch, not per message), then acknowledges the last one: the device
   * has kept everything up to it.
   */
  private async work() {
    this.working = true;
    try {
      while (this.waiting.length) {
        const batch = this.waiting.splice(0);
        const lines: Line[] = JSON.parse(await this.device.takeMany(`[${batch.join(",")}]`));
        this.handlers.onLines(lines);
        this.send({ type: "ack", cursor: JSON.parse(batch[batch.length - 1]).cursor });
      }
    } catch (e) {
      this.handlers.onError(e);
      // What failed is taken again from the device's cursor on the next connection.
      this.waiting = [];
      this.socket?.close();
    } finally {
      this.working = false;
    }
  }

  send(frame: object) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  close() {
    this.closed = true;
    window.clearInterval(this.heartbeat);
    this.socket?.close();
  }
}
