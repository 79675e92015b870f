// One Ed25519 identity per browser profile: the 32-byte seed lives in IndexedDB (not
// localStorage: it is a key, and IndexedDB is not sent anywhere or shared with other origins'
// storage). The public half is derived by the wasm package; the server maps it to an author id.

const DB = 'meshwork';
const STORE = 'identity';
const KEY = 'ed25519-seed';

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB failed to open'));
  });
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error('IndexedDB request failed'));
  });
}

/** This browser's signing seed, created on first use. */
export async function identitySeed(): Promise<Uint8Array> {
  const db = await open();
  try {
    const existing = await request(db.transaction(STORE).objectStore(STORE).get(KEY));
    if (existing instanceof Uint8Array && existing.length === 32) return existing;
    const seed = crypto.getRandomValues(new Uint8Array(32));
    await request(db.transaction(STORE, 'readwrite').objectStore(STORE).put(seed, KEY));
    return seed;
  } finally {
    db.close();
  }
}

const NAME = 'display-name';

/** The display name this browser's identity goes by (stored beside the seed), or null before the
 *  user chose one. */
export async function storedDisplayName(): Promise<string | null> {
  const db = await open();
  try {
    const name = await request(db.transaction(STORE).objectStore(STORE).get(NAME));
    return typeof name === 'string' && name.length > 0 ? name : null;
  } finally {
    db.close();
  }
}

/** Keeps `name` as this identity's display name. */
export async function storeDisplayName(name: string): Promise<void> {
  const db = await open();
  try {
    await request(db.transaction(STORE, 'readwrite').objectStore(STORE).put(name, NAME));
  } finally {
    db.close();
  }
}

const pendingKey = (session: string) => `pending:${session}`;

/** What the session's connection kept while its edits were unacknowledged (its replica, its
 *  signed entries), or null: a reload while offline goes on from it. */
export async function loadPending(session: string): Promise<Uint8Array | null> {
  const db = await open();
  try {
    const saved = await request(db.transaction(STORE).objectStore(STORE).get(pendingKey(session)));
    return saved instanceof Uint8Array ? saved : null;
  } finally {
    db.close();
  }
}

/** Keeps `saved` for `session` (null: forget it, nothing is pending any more). */
export async function storePending(session: string, saved: Uint8Array | null): Promise<void> {
  const db = await open();
  try {
    const store = db.transaction(STORE, 'readwrite').objectStore(STORE);
    if (saved === null) await request(store.delete(pendingKey(session)));
    else await request(store.put(saved, pendingKey(session)));
  } finally {
    db.close();
  }
}
