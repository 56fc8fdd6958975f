import type { Device } from "../pkg/hearth_web.js";
import type { Notice } from "./types";

/**
 * Notices from the hearth's admins the user has not dismissed, above the open chat. Dismissing
 * marks them read up to that one, on every device of the user.
 */
export function Notices(props: {
  device: Device;
  notices: Notice[];
  onDismissed(seq: number): void;
  onError(e: unknown): void;
}) {
  if (!props.notices.length) return null;
  async function dismiss(seq: number) {
    try {
      await props.device.request("POST", "/v1/notices/read", JSON.stringify({ seq }));
      props.onDismissed(seq);
    } catch (e) {
      props.onError(e);
    }
  }
  return (
    <section class="notices" aria-label="Notices from your hearth">
      {props.notices.map((n) => (
        <div class="notice" key={n.seq} data-seq={n.seq}>
          <small>
            From your hearth's admins ·{" "}
            {new Date(n.ts).toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}
          </small>
          <p>{n.body}</p>
          <button class="dismiss" onClick={() => dismiss(n.seq)}>
            Dismiss
          </button>
        </div>
      ))}
    </section>
  );
}
