import { useEffect, useState } from "preact/hooks";
import { Device } from "../pkg/hearth_web.js";
import { Login } from "./Login";
import { Chat } from "./Chat";
import { sentence } from "./format";

export function App() {
  const [device, setDevice] = useState<Device | null | undefined>(undefined);
  const [error, setError] = useState("");

  useEffect(() => {
    Device.resume().then(
      (d: Device | undefined) => setDevice(d ?? null),
      (e: unknown) => {
        setError(sentence(e));
        setDevice(null);
      },
    );
  }, []);

  if (device === undefined) return <p class="loading">Opening your device…</p>;
  if (device === null) return <Login onDevice={setDevice} error={error} />;
  return <Chat device={device} onLogout={() => setDevice(null)} />;
}
