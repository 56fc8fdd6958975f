// Web Push for a closed tab: the browser's push subscription, registered with the hearth as
// this device's endpoint (spec/client-protocol.md, "Push notifications"). The hearth pushes only
// while no tab of this device is connected; sw.js shows what it pushes.
import type { Device } from "../pkg/hearth_web.js";

export type PushState =
  | { kind: "unsupported"; why: string }
  | { kind: "blocked" }
  | { kind: "off" }
  | { kind: "on" }
  | { kind: "stopped" };

/** How long the browser's push service may take to subscribe before the page says so. */
const SUBSCRIBE_WAIT_MS = 30_000;

function unsupported(): string | null {
  if (!window.isSecureContext) return "Notifications need this hearth to be served over HTTPS.";
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
    return "This browser cannot show notifications for a closed tab.";
  }
  return null;
}

/** Where this device stands: asks the hearth, never prompts. */
export async function pushState(device: Device): Promise<PushState> {
  const why = unsupported();
  if (why) return { kind: "unsupported", why };
  if (Notification.permission === "denied") return { kind: "blocked" };
  try {
    const pusher = JSON.parse(await device.request("GET", "/v1/pushers"));
    if (pusher.disabled) return { kind: "stopped" };
    const registration = await navigator.serviceWorker.getRegistration();
    const subscription = await registration?.pushManager.getSubscription();
    return subscription && subscription.endpoint === pusher.url ? { kind: "on" } : { kind: "off" };
  } catch (e) {
    if (e instanceof Error && e.name === "not_found") return { kind: "off" };
    throw e;
  }
}

function keyBytes(base64url: string): Uint8Array<ArrayBuffer> {
  const raw = atob(base64url.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function sameKey(a: ArrayBuffer | null, b: Uint8Array): boolean {
  if (!a || a.byteLength !== b.length) return false;
  const bytes = new Uint8Array(a);
  return bytes.every((x, i) => x === b[i]);
}

/** Asks for permission (call from a click), subscribes with the hearth's VAPID key, registers. */
export async function enablePush(device: Device): Promise<PushState> {
  const why = unsupported();
  if (why) return { kind: "unsupported", why };
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    return permission === "denied" ? { kind: "blocked" } : { kind: "off" };
  }
  const registration = await navigator.serviceWorker.register("/sw.js");
  await navigator.serviceWorker.ready;
  const key = keyBytes(JSON.parse(await device.request("GET", "/v1/pushers/vapid")).public_key);
  let subscription = await registration.pushManager.getSubscription();
  // A subscription made for another key (the hearth's was rotated) would be refused upstream.
  if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) {
    let timer: number | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = window.setTimeout(
        () =>
          reject(
            new Error(
              "The browser's push service did not answer; it may be unreachable from this network. Try again later",
            ),
          ),
        SUBSCRIBE_WAIT_MS,
      );
    });
    try {
      subscription = await Promise.race([
        registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }),
        late,
      ]);
    } finally {
      window.clearTimeout(timer);
    }
  }
  const json = subscription.toJSON();
  await device.request(
    "POST",
    "/v1/pushers",
    JSON.stringify({ kind: "web_push", url: json.endpoint, p256dh: json.keys?.p256dh, auth: json.keys?.auth }),
  );
  return { kind: "on" };
}

/** Stops notifications for this device, here and at the hearth. */
export async function disablePush(device: Device): Promise<PushState> {
  await forgetSubscription();
  await device.request("DELETE", "/v1/pushers");
  return { kind: "off" };
}

/** Drops the browser's subscription (on logout the hearth forgets the device and its endpoint). */
export async function forgetSubscription(): Promise<void> {
  if (unsupported()) return;
  const registration = await navigator.serviceWorker.getRegistration();
  const subscription = await registration?.pushManager.getSubscription();
  await subscription?.unsubscribe();
}

/** Closes the notifications of a chat the person is now looking at. */
export function closeNotifications(room: string) {
  if (unsupported()) return;
  navigator.serviceWorker
    .getRegistration()
    .then((r) => r?.getNotifications({ tag: room }))
    .then((shown) => shown?.forEach((n) => n.close()))
    .catch(() => {});
}
