// The live WebSocket: frames in inbox order, each handed to the device one at a time, then
// acknowledged. Reconnects with backoff; every connection starts after the device's cursor, so
// nothing is missed or shown twice.
import type { Device } from "../pkg/hearth_web.js";
import type { Line } from "./types";

/** A receipt, typing or presence frame (ephemeral: shown, never stored). */
export type Signal =
  | { type: "receipt"; room_id: string; user_id: string; kind: "delivered" | "read"; seq: number }
  | { type: "typing"; room_id: string; user_id: string; typing: boolean }
  | { type: "presence"; user_id: string; state: "online" | "offline"; last_seen_ts?: number };

export interface LiveHandlers {
  onLine(line: Line): void;
  onSignal(signal: Signal): void;
  onState(state: "connecting" | "live" | "offline"): void;
  onError(error: unknown): void;
}

export class Live {
  private socket?: WebSocket;
  private queue: Promise<void> = Promise.resolve();
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
      this.handlers.onError(e);
      this.retry();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/ws?since=${params.cursor}&access_token=${encodeURIComponent(params.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onmessage = (message) => {
      const text = String(message.data);
      this.queue = this.queue.then(() => this.frame(text)).catch((e) => this.handlers.onError(e));
    };
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

  private async frame(text: string) {
    const frame = JSON.parse(text);
    switch (frame.type) {
      case "event": {
        const line: Line = JSON.parse(await this.device.take(text));
        this.handlers.onLine(line);
        this.send({ type: "ack", cursor: frame.cursor });
        break;
      }
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
      case "error":
        this.handlers.onError(new Error(frame.message));
        break;
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
