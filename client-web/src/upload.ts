// Asset upload (docs/protocol.md §5.3): a file sent in 1 MiB chunks to
// `PUT /api/v1/sessions/{id}/assets/{sha256}`, each chunk with its SHA-256, resumed where the
// server says after a dropped connection or a refused offset. A file the server already holds
// is not sent again.

/** What the server knows of an asset. */
export interface AssetStatus {
  received: number;
  length: number;
  complete: boolean;
  entities?: { name: string; vertices: number; faces: number }[];
}

/** Bytes per chunk (the server takes at most 4 MiB). */
export const CHUNK_BYTES = 1 << 20;

/** Network failures in a row before an upload gives up. */
export const MAX_RETRIES = 5;

/** The server refused the file (a reason to show), as opposed to the network failing. */
export class UploadRefused extends Error {}

export function toHex(bytes: ArrayBuffer | Uint8Array): string {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex: string): number[] {
  const out: number[] = [];
  for (let i = 0; i + 1 < hex.length; i += 2) out.push(parseInt(hex.slice(i, i + 2), 16));
  return out;
}

export async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  return toHex(await crypto.subtle.digest('SHA-256', bytes));
}

async function refusal(r: Response): Promise<UploadRefused> {
  const body = (await r.json().catch(() => ({}))) as { error?: string };
  return new UploadRefused(body.error ?? `${r.status} ${r.statusText}`);
}

/**
 * Uploads `bytes` as an asset of the session whose asset API is `base`
 * (`/api/v1/sessions/{id}/assets`), reporting progress; returns its id (hex SHA-256) and what
 * the server read from it. `wait` is how to pause before a retry (the page: a timer).
 */
export async function uploadAsset(
  bytes: Uint8Array<ArrayBuffer>,
  base: string,
  ticket: string,
  onProgress: (received: number, total: number) => void,
  wait: (ms: number) => Promise<void> = (ms) => new Promise((done) => window.setTimeout(done, ms)),
): Promise<{ asset: string; status: AssetStatus }> {
  if (bytes.length === 0) throw new UploadRefused('the file is empty');
  const asset = await sha256Hex(bytes);
  const url = `${base}/${asset}`;
  const auth = { 'X-Meshwork-Ticket': ticket };
  let failures = 0;
  for (;;) {
    try {
      // Where the server stands: done already, part of it, or nothing.
      const s = await fetch(url, { headers: auth });
      let received = 0;
      if (s.ok) {
        const status = (await s.json()) as AssetStatus;
        if (status.complete) return { asset, status };
        received = status.received;
      } else if (s.status !== 404) {
        throw await refusal(s);
      }
      onProgress(received, bytes.length);
      while (received < bytes.length) {
        const chunk = bytes.subarray(received, Math.min(received + CHUNK_BYTES, bytes.length));
        const r = await fetch(url, {
          method: 'PUT',
          headers: {
            ...auth,
            'Content-Type': 'application/octet-stream',
            'Upload-Offset': String(received),
            'Upload-Length': String(bytes.length),
            'X-Chunk-Sha256': await sha256Hex(chunk),
          },
          body: chunk,
        });
        // Another tab, or a lost answer: ask again where to resume.
        if (r.status === 409) break;
        if (!r.ok) throw await refusal(r);
        const status = (await r.json()) as AssetStatus;
        onProgress(status.received, bytes.length);
        if (status.complete) return { asset, status };
        received = status.received;
        failures = 0;
      }
    } catch (e) {
      if (e instanceof UploadRefused) throw e;
      failures += 1;
      if (failures > MAX_RETRIES) throw e;
      // The connection dropped: back off, then resume where the server says.
      await wait(250 * 2 ** failures);
    }
  }
}
