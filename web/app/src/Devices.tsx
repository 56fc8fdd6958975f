import { useEffect, useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import { enc } from "./format";

interface DeviceInfo {
  device_id: string;
  name: string;
  created_ts: number;
  current: boolean;
}

/** This user's devices; any other one can be logged out and removed from every group. */
export function Devices(props: { device: Device; onError(e: unknown): void }) {
  const [devices, setDevices] = useState<DeviceInfo[]>([]);

  async function load() {
    try {
      setDevices(JSON.parse(await props.device.request("GET", "/v1/devices")));
    } catch (e) {
      props.onError(e);
    }
  }
  useEffect(() => {
    load();
  }, []);

  async function remove(d: DeviceInfo) {
    if (!confirm(`Log out "${d.name}" (${d.device_id}) and remove it from all your chats?`)) return;
    try {
      await props.device.removeDevice(d.device_id);
      await load();
    } catch (e) {
      props.onError(e);
    }
  }

  return (
    <ul class="devices" id="devices">
      {devices.map((d) => (
        <li key={d.device_id} data-device={enc(d.device_id)}>
          {d.name} <code>{d.device_id}</code> {d.current && <small>(this one)</small>}
          {!d.current && (
            <button class="remove-device" onClick={() => remove(d)}>
              Remove
            </button>
          )}
        </li>
      ))}
    </ul>
  );
}
