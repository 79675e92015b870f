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

/** The bytes of a `data:` URI (base64). */
function dataUri(uri: string): Uint8Array {
  const comma = uri.indexOf(';base64,');
  if (comma < 0) throw new UploadRefused('a data URI that is not base64');
  const text = atob(uri.slice(comma + ';base64,'.length));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

/**
 * The file to upload from what the user chose or dropped: a `.glb` as it is; a `.gltf` packed
 * with its buffers (the other files, by the names its URIs give, or embedded `data:` URIs) into
 * one GLB, its buffer views re-pointed into the one binary chunk. Returns the name to show.
 */
export async function packGltf(files: File[]): Promise<{ name: string; bytes: Uint8Array<ArrayBuffer> }> {
  const main = files.find((f) => /\.gltf$/i.test(f.name)) ?? files[0];
  if (!main) throw new UploadRefused('no file');
  const bytes = new Uint8Array(await main.arrayBuffer());
  if (!/\.gltf$/i.test(main.name)) return { name: main.name, bytes };
  let doc: { buffers?: { uri?: string; byteLength: number }[]; bufferViews?: { buffer: number; byteOffset?: number }[] };
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new UploadRefused(`${main.name} is not glTF JSON (${(e as Error).message})`);
  }
  const parts: Uint8Array[] = [];
  const bases: number[] = [];
  let length = 0;
  for (const b of doc.buffers ?? []) {
    const uri = b.uri ?? '';
    let data: Uint8Array;
    if (uri.startsWith('data:')) {
      data = dataUri(uri);
    } else {
      const name = decodeURIComponent(uri);
      const file = files.find((f) => f.name === name);
      if (!file) throw new UploadRefused(`${main.name} needs "${name}": choose or drop it together with the .gltf`);
      data = new Uint8Array(await file.arrayBuffer());
    }
    if (data.length < b.byteLength) throw new UploadRefused(`"${uri}" is shorter than the ${b.byteLength} bytes declared`);
    const gap = pad4(length);
    if (gap) parts.push(new Uint8Array(gap));
    length += gap;
    bases.push(length);
    parts.push(data.subarray(0, b.byteLength));
    length += b.byteLength;
  }
  for (const v of doc.bufferViews ?? []) {
    v.byteOffset = (bases[v.buffer] ?? 0) + (v.byteOffset ?? 0);
    v.buffer = 0;
  }
  doc.buffers = length > 0 ? [{ byteLength: length }] : [];
  const json = new TextEncoder().encode(JSON.stringify(doc));
  const jsonLength = json.length + pad4(json.length);
  const binLength = length + pad4(length);
  const total = 12 + 8 + jsonLength + (length > 0 ? 8 + binLength : 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, 0x46546c67, true); // "glTF"
  view.setUint32(4, 2, true);
  view.setUint32(8, total, true);
  view.setUint32(12, jsonLength, true);
  view.setUint32(16, 0x4e4f534a, true); // "JSON"
  out.set(json, 20);
  out.fill(0x20, 20 + json.length, 20 + jsonLength);
  if (length > 0) {
    const at = 20 + jsonLength;
    view.setUint32(at, binLength, true);
    view.setUint32(at + 4, 0x004e4942, true); // "BIN\0"
    let p = at + 8;
    for (const part of parts) {
      out.set(part, p);
      p += part.length;
    }
  }
  return { name: main.name, bytes: out };
}
