import { useEffect, useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import { type PushState, disablePush, enablePush, pushState } from "./push";

/** Notifications for this device while no tab has it open: on, off, and why not. */
export function Notifications(props: { device: Device; onError(e: unknown): void }) {
  const [state, setState] = useState<PushState | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    pushState(props.device).then(setState, props.onError);
  }, []);

  async function change(to: (d: Device) => Promise<PushState>) {
    setBusy(true);
    try {
      setState(await to(props.device));
    } catch (e) {
      props.onError(e);
    } finally {
      setBusy(false);
    }
  }

  if (!state) return null;
  const on = (
    <button id="notifications-on" disabled={busy} onClick={() => change(enablePush)}>
      Notify me when Hearth is closed
    </button>
  );
  return (
    <p id="notifications">
      {state.kind === "unsupported" && state.why}
      {state.kind === "blocked" && "Notifications are blocked for this site in the browser's settings."}
      {state.kind === "off" && on}
      {state.kind === "stopped" && (
        <>
          Notifications stopped: the browser's push service kept refusing them. {on}
        </>
      )}
      {state.kind === "on" && (
        <>
          Notifications are on for this device.{" "}
          <button id="notifications-off" disabled={busy} onClick={() => change(disablePush)}>
            Turn off
          </button>
        </>
      )}
    </p>
  );
}
