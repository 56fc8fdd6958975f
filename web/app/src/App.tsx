import { useEffect, useState } from "preact/hooks";
import { Device } from "../pkg/hearth_web.js";
import { Login } from "./Login";
import { Chat } from "./Chat";
import { sentence } from "./format";

/**
 * Holds this browser's one device for as long as the tab lives. Two tabs driving the same MLS
 * state would each advance its ratchets without the other and could reuse a key, as two
 * processes on one state file would; the native client locks its file for the same reason.
 * When another tab holds it, `onWaiting` is called and the promise settles once that tab has
 * closed: this one then takes the device over (tabs waiting take it in turn).
 */
function holdTheDevice(onWaiting: () => void): Promise<void> {
  if (!navigator.locks) return Promise.resolve();
  return new Promise((resolve, reject) => {
    // Never settles while the tab is open, so the lock is released only when it closes.
    const hold = () => {
      resolve();
      return new Promise<void>(() => {});
    };
    navigator.locks
      .request("hearth-device", { ifAvailable: true }, (lock) => {
        if (lock) return hold();
        onWaiting();
        navigator.locks.request("hearth-device", hold).catch(reject);
        return undefined;
      })
      .catch(reject);
  });
}

export function App() {
  const [device, setDevice] = useState<Device | null | undefined | "elsewhere">(undefined);
  const [error, setError] = useState("");

  useEffect(() => {
    holdTheDevice(() => setDevice("elsewhere"))
      .then(() => Device.resume())
      .then((d: Device | undefined) => setDevice(d ?? null))
      .catch((e: unknown) => {
        setError(sentence(e));
        setDevice(null);
      });
  }, []);

  if (device === undefined) return <p class="loading">Opening your device…</p>;
  if (device === "elsewhere") {
    return (
      <p class="loading" id="elsewhere">
        Hearth is open in another tab of this browser. Close that tab and this one takes over:
        one tab at a time keeps your encryption keys safe.
      </p>
    );
  }
  if (device === null) return <Login onDevice={setDevice} error={error} />;
  return (
    <Chat
      device={device}
      onLogout={(why?: string) => {
        setError(why ?? "");
        setDevice(null);
      }}
    />
  );
}
