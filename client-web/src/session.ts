// The editor's connection to one session: the wasm protocol client (handshake, signing, replica)
// fed by a transport. Emits typed events; the UI never parses frames.

import init, { Connection, clean_display_name, ticket_role, ticket_session, transform_commands } from '../pkg/meshwork_wasm.js';
import { storePending } from './identity';
import { connect, type Transport, type TransportKind } from './net';
import { reconnectDelayMs, type Command, type ElementKey, type EntityView, type PresenceEvent, type Role, type SceneView, type Transform } from './state';

export type SessionEvent =
  | { type: 'joined'; author: number; role: Role }
  | { type: 'join_refused'; message: string }
  | { type: 'synced' }
  | { type: 'resyncing'; reason: string }
  | { type: 'changed' }
  | { type: 'ack'; seq: number }
  | { type: 'refused'; seq: number; code: string; message: string }
  | { type: 'pong'; nonce: number }
  | ({ type: 'presence' } & PresenceEvent)
  | { type: 'left'; author: number }
  | { type: 'live'; entities: number[] }
  | { type: 'element_selection'; author: number; entity: number | null; elements: ElementKey[] }
  | { type: 'closed'; reason: string; message: string }
  | { type: 'role'; role: Role }
  | { type: 'reconnecting'; attempt: number; inMs: number; why: string };

/** Server close reasons after which reconnecting would only be refused again. */
export const FINAL_CLOSES = new Set(['Kicked', 'ProtocolViolation', 'Untrusted', 'Leaving']);

let wasmReady: Promise<unknown> | null = null;

/** Loads the wasm package once. */
export function loadWasm(): Promise<unknown> {
  wasmReady ??= init();
  return wasmReady;
}

export function ticketSession(ticket: string): string | null {
  return ticket_session(ticket) ?? null;
}

/** A typed display name made one the protocol accepts (its rule, through wasm). */
export function cleanDisplayName(typed: string): string {
  return clean_display_name(typed);
}

export function ticketRole(ticket: string): Role | null {
  return (ticket_role(ticket) as Role | undefined) ?? null;
}

/**
 * The commands that take `entity` from one transform to another: the protocol's rule (rotation
 * composed on the left, per-axis scale), so absolute edits compose like any delta.
 */
export function transformCommands(entity: number, from: Transform, to: Transform): Command[] {
  return JSON.parse(transform_commands(entity, JSON.stringify(from), JSON.stringify(to))) as Command[];
}

/** A ping unanswered this long means the path is gone (the server answers within a tick). */
export const SILENT_MS = 5000;

export class Session {
  readonly conn: Connection;
  transport: Transport | null = null;
  onEvent: (e: SessionEvent) => void = () => {};
  onTransportNote: (text: string) => void = () => {};
  private pingTimer: number | undefined;
  /** Set when the server ended the session for good (or the page closed it). */
  private final = false;
  private attempt = 0;
  private prefer: TransportKind | null = null;

  /** Unacknowledged entries in the state last kept for a reload (0: nothing kept). */
  keptPending = 0;
  private keepTimer: number | undefined;

  constructor(
    seed: Uint8Array,
    readonly ticket: string,
    readonly sessionId: string,
    saved: Uint8Array | null = null,
  ) {
    let conn: Connection | null = null;
    if (saved) {
      try {
        conn = Connection.restore(seed, ticket, saved);
      } catch (e) {
        console.warn(`meshwork: the edits kept for this session could not be restored (${String(e)})`);
      }
    }
    this.conn = conn ?? new Connection(seed, ticket);
    this.keptPending = conn ? this.conn.unacked_count() : 0;
  }

  /** Connects (WebRTC, else the WebSocket); a failure is retried with backoff, like a drop. */
  async open(prefer: TransportKind | null): Promise<void> {
    this.prefer = prefer;
    // A reload or a closed tab right after an edit: what is pending is kept first.
    window.addEventListener('pagehide', () => this.keepNow());
    try {
      await this.attach();
    } catch (e) {
      this.retry((e as Error).message);
    }
    this.pingTimer = window.setInterval(() => {
      if (!this.transport) return;
      // A path that went silent (a server killed without a goodbye, a WebRTC peer whose ICE
      // has not given up yet) is dropped once a ping has gone unanswered this long.
      const now = performance.now();
      if (this.unansweredSince !== null && now - this.unansweredSince > SILENT_MS) {
        this.cut(`the server has not answered for ${Math.round(SILENT_MS / 1000)} s`);
        return;
      }
      if (!this.conn.joined()) return;
      this.unansweredSince ??= now;
      this.conn.ping(now);
      this.flush();
    }, 1000);
  }

  /** When the first ping that nothing has answered since was sent (`null`: all heard). */
  private unansweredSince: number | null = null;

  /** A transport (WebRTC, else the WebSocket fallback), wired to the protocol machine. */
  private async attach(): Promise<void> {
    const t = await connect(this.sessionId, this.ticket, (n) => this.onTransportNote(n), this.prefer);
    this.transport = t;
    // A dropped transport may still report (a late close, a last message): only the current
    // one speaks to the connection.
    this.unansweredSince = null;
    t.onData = (bytes) => {
      if (this.transport !== t) return;
      this.unansweredSince = null;
      this.dispatch(() => this.conn.receive(bytes));
    };
    t.onPresence = (frame) => {
      if (this.transport !== t) return;
      this.unansweredSince = null;
      this.dispatch(() => this.conn.receive_presence(frame));
    };
    t.onClose = (why) => {
      if (this.transport === t) this.lost(why);
    };
    this.flush();
  }

  /** Drops the transport as a lost network path does (no goodbye); the session reconnects
   *  by itself. */
  cut(why: string): void {
    const t = this.transport;
    t?.close();
    this.lost(why);
  }

  /** The transport dropped: keep editing offline and reconnect by ourselves, with backoff. */
  private lost(why: string): void {
    if (this.transport === null) return;
    this.transport = null;
    if (this.final) {
      this.onEvent({ type: 'closed', reason: 'Transport', message: why });
      return;
    }
    this.conn.reconnect();
    this.retry(why);
  }

  private retry(why: string): void {
    this.attempt += 1;
    const inMs = reconnectDelayMs(this.attempt);
    this.onEvent({ type: 'reconnecting', attempt: this.attempt, inMs, why });
    window.setTimeout(() => {
      if (this.final) return;
      this.attach().then(
        () => {
          this.attempt = 0;
        },
        (e: unknown) => this.retry((e as Error).message),
      );
    }, inMs);
  }

  private dispatch(read: () => string): void {
    // Previews that arrive now are stamped with the page's clock.
    this.tick();
    let events: SessionEvent[];
    try {
      events = JSON.parse(read()) as SessionEvent[];
    } catch (e) {
      this.onEvent({ type: 'closed', reason: 'ProtocolViolation', message: String(e) });
      this.close();
      return;
    }
    for (const e of events) {
      if ((e.type === 'closed' && FINAL_CLOSES.has(e.reason)) || e.type === 'join_refused') this.final = true;
      this.onEvent(e);
    }
    this.flush();
    this.keep();
  }

  /** Keeps the connection's state for a reload while edits are unacknowledged (at most one
   *  save per 300 ms, the first 300 ms after a change: the scene is encoded once per burst, and
   *  a stream of messages cannot put the save off), and forgets it once nothing is pending. */
  private keep(): void {
    if (this.keepTimer !== undefined) return;
    if (this.conn.unacked_count() === 0 && this.keptPending === 0) return;
    this.keepTimer = window.setTimeout(() => {
      this.keepTimer = undefined;
      this.keepNow();
    }, 300);
  }

  /** Saves (or forgets) the state for a reload now: also when the page is being left. */
  keepNow(): void {
    const now = this.conn.unacked_count();
    if (now === 0 && this.keptPending === 0) return;
    const saved = now > 0 ? (this.conn.save() ?? null) : null;
    storePending(this.sessionId, saved).then(
      () => {
        this.keptPending = saved ? now : 0;
      },
      (e: unknown) => console.warn(`meshwork: could not keep pending edits (${String(e)})`),
    );
  }

  /** Own edits not yet acknowledged (made offline included). */
  pending(): number {
    return this.conn.unacked_count();
  }

  /** Moves the connection's clock on: others' previews that went quiet end (a `live` event). */
  tick(): void {
    const ended = Array.from(this.conn.tick(Date.now()));
    if (ended.length > 0) this.onEvent({ type: 'live', entities: ended });
  }

  flush(): void {
    // Without a transport the queue waits (the Hello of the next one, edits made offline).
    if (!this.transport) return;
    const out = this.conn.poll_transmit();
    if (out.length > 0) this.transport?.send(out);
  }

  /** Signs and sends `commands` as one batch; returns their sequence numbers. */
  submit(commands: Command[]): number[] {
    if (commands.length === 0) return [];
    const seqs = Array.from(this.conn.submit_batch_json(JSON.stringify(commands)));
    this.flush();
    this.keep();
    return seqs;
  }

  /** The commands of one gesture, as one undo step (the protocol's rule), labelled `label`. */
  submitStep(commands: Command[], label: string): number[] {
    if (commands.length === 0) return [];
    const seqs = Array.from(this.conn.submit_step_json(JSON.stringify(commands), label));
    this.flush();
    this.keep();
    return seqs;
  }

  presence(cursor: number[] | null, head: number[] | null, rotation: number[] | null): void {
    if (!this.transport) return;
    const frame = this.conn.presence_frame(
      cursor ? new Float32Array(cursor) : undefined,
      head ? new Float32Array(head) : undefined,
      rotation ? new Float32Array(rotation) : undefined,
    );
    this.transport.sendPresence(frame);
  }

  /**
   * Follows the view: others' presence, previews and selections only around `center` (a cube of
   * half-edge `halfExtent` metres; the log arrives whatever the region), asked for again when
   * the view has moved enough (the rule is the protocol's). Kept over reconnects.
   */
  followInterest(center: number[], halfExtent: number): void {
    this.conn.follow_interest(new Float32Array(center), halfExtent);
    if (this.transport) this.flush();
  }

  /** A live preview of a drag (`null` when it ends), on the presence lane. */
  preview(entity: number, t: Transform | null): void {
    if (!this.transport) return;
    const frame = t
      ? this.conn.preview_frame(
          entity,
          new Float32Array(t.translation),
          new Float32Array(t.rotation),
          new Float32Array(t.scale),
        )
      : this.conn.preview_frame(entity, undefined, undefined, undefined);
    this.transport.sendPresence(frame);
  }

  /**
   * A live preview of a mesh edit (`command` is what the gesture would commit now; `null` ends
   * it), on the presence lane. Gestures too big for a datagram are not previewed to others.
   */
  editPreview(entity: number, command: Command | null): void {
    if (!this.transport) return;
    const frame = this.conn.edit_preview_frame(entity, command ? JSON.stringify(command) : undefined);
    if (frame) this.transport.sendPresence(frame);
  }

  /** This member's selected mesh elements (`entity: null` on leaving edit mode), on the presence lane. */
  elementSelection(entity: number | null, elements: ElementKey[]): void {
    if (!this.transport) return;
    const frame = this.conn.element_selection_frame(entity ?? undefined, JSON.stringify(elements));
    if (frame) this.transport.sendPresence(frame);
  }

  scene(): SceneView {
    return JSON.parse(this.conn.scene_json()) as SceneView;
  }

  /** What changed in the replica since the last call: everything (after a snapshot) or these entities. */
  changes(): { all: boolean; entities: number[] } {
    return JSON.parse(this.conn.changes_json()) as { all: boolean; entities: number[] };
  }

  /** One entity as the scene lists it, or `null` when it is gone. */
  entity(id: number): EntityView | null {
    return JSON.parse(this.conn.entity_json(id)) as EntityView | null;
  }

  /** The scene without its entities. */
  sceneMeta(): Omit<SceneView, 'entities'> {
    return JSON.parse(this.conn.scene_meta_json()) as Omit<SceneView, 'entities'>;
  }

  close(): void {
    this.final = true;
    window.clearInterval(this.pingTimer);
    this.transport?.close();
  }
}
