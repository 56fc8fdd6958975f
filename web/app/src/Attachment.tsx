import { useEffect, useState } from "preact/hooks";
import type { Device } from "../pkg/hearth_web.js";
import type { Attachment } from "./types";
import { sentence } from "./format";

/** Images this size or smaller are fetched and shown in the timeline. */
const PREVIEW_LIMIT = 8 * 1024 * 1024;
const IMAGE = /\.(png|jpe?g|gif|webp|avif|bmp)$/i;

export function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function mime(name: string): string {
  const ext = name.split(".").pop()?.toLowerCase() ?? "";
  const types: Record<string, string> = {
    png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif",
    webp: "image/webp", avif: "image/avif", bmp: "image/bmp", pdf: "application/pdf",
    txt: "text/plain",
  };
  return types[ext] ?? "application/octet-stream";
}

/** An attachment in the timeline: an image preview, and a download of the decrypted file. */
export function AttachmentView(props: { device: Device; attachment: Attachment }) {
  const { device, attachment } = props;
  const [url, setUrl] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const image = IMAGE.test(attachment.name);

  async function fetchUrl(): Promise<string | null> {
    if (url) return url;
    setBusy(true);
    try {
      const bytes: Uint8Array = await device.fetchFile(JSON.stringify(attachment));
      const made = URL.createObjectURL(new Blob([bytes as BlobPart], { type: mime(attachment.name) }));
      setUrl(made);
      return made;
    } catch (e) {
      setError(sentence(e));
      return null;
    } finally {
      setBusy(false);
    }
  }

  useEffect(() => {
    if (image && attachment.size <= PREVIEW_LIMIT) fetchUrl();
  }, []);
  useEffect(() => () => {
    if (url) URL.revokeObjectURL(url);
  }, [url]);

  async function download() {
    const href = await fetchUrl();
    if (!href) return;
    const a = document.createElement("a");
    a.href = href;
    a.download = attachment.name;
    a.click();
  }

  return (
    <div class="attachment">
      {image && url && <img class="preview" src={url} alt={attachment.name} />}
      <button class="download" onClick={download} disabled={busy}>
        ⬇ {attachment.name} <small>({size(attachment.size)})</small>
      </button>
      {error && <small class="error">{error}</small>}
    </div>
  );
}
