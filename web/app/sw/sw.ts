// The service worker: shows a notification when the hearth pushes one for this device while no
// tab has it open, and opens the chat when the notification is clicked. The push carries room,
// sender and counts, never content (the hearth cannot read it), so that is all it can say.
/// <reference lib="webworker" />
declare const self: ServiceWorkerGlobalScope;
export {}; // a module, so `self` above is this worker's and not the global one

/** What the hearth sends (spec/client-protocol.md, "Push notifications"). */
interface Pushed {
  room_id?: string;
  sender?: string;
  unread?: number;
  count?: number;
}

function shortName(user: string): string {
  return user.startsWith("@") ? user.slice(1).split(":")[0] : user;
}

function pushed(data: PushMessageData | null): Pushed {
  try {
    const value = data?.json();
    return value && typeof value === "object" ? value : {};
  } catch {
    return {};
  }
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const p = pushed(event.data);
  const unread = typeof p.unread === "number" && p.unread > 0 ? p.unread : (p.count ?? 1);
  const title = typeof p.sender === "string" ? shortName(p.sender) : "Hearth";
  const body = unread === 1 ? "1 new message" : `${unread} new messages`;
  // One notification per chat, replaced by the next: a burst is one line, not fifty.
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      tag: p.room_id ?? "hearth",
      data: { room_id: p.room_id },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const room: string | undefined = event.notification.data?.room_id;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((w) => new URL(w.url).origin === self.location.origin);
      if (open) {
        // One tab holds the device: bring it forward and let it open the chat.
        await open.focus();
        open.postMessage({ type: "open-room", room_id: room });
      } else {
        await self.clients.openWindow(room ? `/#room=${encodeURIComponent(room)}` : "/");
      }
    })(),
  );
});
