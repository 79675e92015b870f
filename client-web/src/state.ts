// UI state logic of the editor: pure functions over plain data, no DOM, no network, so it is
// unit-tested (state.test.ts). The server decides what is true; this decides what to show and
// which commands an interaction turns into.

export type Vec3 = [number, number, number];
export type Quat = [number, number, number, number];
export type Role = 'viewer' | 'editor' | 'admin';
export type Tool = 'select' | 'move' | 'rotate' | 'scale';
export type Primitive = 'Cube' | 'Pyramid' | 'Plane' | 'Cylinder' | 'Sphere';

export interface Transform {
  translation: Vec3;
  rotation: Quat;
  scale: Vec3;
}

export interface EntityView extends Transform {
  id: number;
  name: string;
  kind: string;
  color: [number, number, number, number];
  geometry: string;
}

export interface SceneView {
  position: number;
  name: string | null;
  entities: EntityView[];
  selections: { author: number; entities: number[] }[];
  /** Display names the authors signed (`SetDisplayName`), by author id. */
  names: Record<string, string>;
  /** The roster: every member, with the role the server holds for them. */
  members: { author: number; role: string }[];
}

/** How the editor names an author: "You" for the user, else the name they chose, else
 *  "Author N". */
export function authorLabel(author: number, me: number | null, names: Record<string, string> = {}, you = 'You'): string {
  if (author === me) return you;
  const n = names[String(author)];
  return n ? n : `Author ${author}`;
}

// ---------------------------------------------------------------------------------------------
// Routes: `#/join/<ticket>` joins; anything else is the landing page.

export type Route = { kind: 'join'; ticket: string } | { kind: 'landing' };

export function parseRoute(hash: string): Route {
  const m = /^#\/join\/(.+)$/.exec(hash.trim());
  if (m) {
    const ticket = decodeURIComponent(m[1]).trim();
    if (ticket.startsWith('mwj1_')) return { kind: 'join', ticket };
  }
  return { kind: 'landing' };
}

/** The invite link for a ticket on this origin. */
export function inviteLink(origin: string, ticket: string): string {
  return `${origin}/#/join/${encodeURIComponent(ticket)}`;
}

/** Accepts a pasted ticket or invite link; `null` when it is neither. */
export function ticketFromPaste(text: string): string | null {
  const t = text.trim();
  const hash = t.indexOf('#/join/');
  const candidate = hash >= 0 ? decodeURIComponent(t.slice(hash + '#/join/'.length)) : t;
  return candidate.startsWith('mwj1_') ? candidate : null;
}

// ---------------------------------------------------------------------------------------------
// Roles.

export function canEdit(role: Role | null): boolean {
  return role === 'editor' || role === 'admin';
}

export function readOnlyReason(role: Role | null, setByAdmin = false): string | null {
  if (canEdit(role)) return null;
  if (role === 'viewer' && setByAdmin) {
    return 'View only: an admin made you a viewer of this session. Ask an admin to make you an editor again.';
  }
  if (role === 'viewer') {
    return 'View only: your invite grants the viewer role. Ask an admin for an editor invite to make changes.';
  }
  return 'Not joined yet: editing starts once the session has accepted you.';
}

// ---------------------------------------------------------------------------------------------
// People and colors.

/** A stable, well-spread color per author (golden-angle hue steps). */
export function authorColor(author: number): string {
  const hue = Math.round((author * 137.508) % 360);
  // Comma syntax: both CSS and three.js's Color parse it.
  return `hsl(${hue}, 75%, 55%)`;
}

export interface Person {
  author: number;
  color: string;
  lastSeen: number;
  cursor: Vec3 | null;
  head: { position: Vec3; rotation: Quat } | null;
}

export interface PresenceEvent {
  author: number;
  cursor: { position: Vec3 } | null;
  head: { position: Vec3; rotation: Quat } | null;
}

export const PRESENCE_TTL_MS = 5000;

export function applyPresence(
  people: Map<number, Person>,
  e: PresenceEvent,
  now: number,
): Map<number, Person> {
  const next = new Map(people);
  next.set(e.author, {
    author: e.author,
    color: authorColor(e.author),
    lastSeen: now,
    cursor: e.cursor ? e.cursor.position : null,
    head: e.head,
  });
  return next;
}

/** People heard from within the TTL, oldest author id first. */
/** A member left (the server said so): their cursor and camera go at once. */
export function applyLeft(people: Map<number, Person>, author: number): Map<number, Person> {
  const next = new Map(people);
  next.delete(author);
  return next;
}

/**
 * The selection highlights to draw: those of people present (and one's own). A member who
 * left, or left before one joined, keeps a selection in the scene but shows none.
 */
export function shownSelections(
  selections: { author: number; entities: number[] }[],
  present: Person[],
  me: number | null,
): { author: number; entities: number[] }[] {
  const keep = new Set(present.map((p) => p.author));
  if (me !== null) keep.add(me);
  return selections.filter((s) => keep.has(s.author));
}

export function presentPeople(people: Map<number, Person>, now: number): Person[] {
  return [...people.values()]
    .filter((p) => now - p.lastSeen <= PRESENCE_TTL_MS)
    .sort((a, b) => a.author - b.author);
}

// ---------------------------------------------------------------------------------------------
// Telemetry: sliding one-second windows.

export interface Telemetry {
  rttMs: number | null;
  submitted: number[]; // timestamps
  bytesIn: [number, number][]; // [timestamp, bytes]
  bytesOut: [number, number][];
  refusals: number;
  conflicts: number;
  /** Resyncs the replica asked for, and why the last one (`forged_entry`, `unknown_author`,
   *  `unsigned_delta`, `hash_mismatch`, ...). */
  resyncs: number;
  lastResync: string | null;
}

export function newTelemetry(): Telemetry {
  return { rttMs: null, submitted: [], bytesIn: [], bytesOut: [], refusals: 0, conflicts: 0, resyncs: 0, lastResync: null };
}

const WINDOW_MS = 1000;

export function perSecond(samples: number[], now: number): number {
  return samples.filter((t) => now - t < WINDOW_MS).length;
}

export function bytesPerSecond(samples: [number, number][], now: number): number {
  return samples.filter(([t]) => now - t < WINDOW_MS).reduce((sum, [, n]) => sum + n, 0);
}

export function trim<T>(samples: T[], now: number, time: (s: T) => number): T[] {
  return samples.filter((s) => now - time(s) < WINDOW_MS);
}

// ---------------------------------------------------------------------------------------------
// Refusals: what a toast says.

export interface Refusal {
  code: string;
  message: string;
}

/** The server names authors `author#N`; the editor calls them by their display names ("Author
 *  N" without one, and the user "you"). */
export function namedAuthors(text: string, me: number | null, names: Record<string, string> = {}): string {
  return text.replace(/author#(\d+)/g, (_, n: string) => authorLabel(Number(n), me, names, 'you'));
}

/** The server names entities `entity#<hex>`; the editor uses their display names. */
export function namedEntities(text: string, name: (id: number) => string | null): string {
  return text.replace(/entity#([0-9a-f]+)/g, (whole, hex: string) => {
    const n = name(parseInt(hex, 16));
    return n === null ? whole : `\u201c${n}\u201d`;
  });
}

export function refusalText(r: Refusal, me: number | null = null, names: Record<string, string> = {}): string {
  switch (r.code) {
    case 'undo': {
      const text = namedAuthors(r.message, me, names);
      return text.charAt(0).toUpperCase() + text.slice(1);
    }
    case 'permission':
      return `Not allowed: ${r.message}`;
    case 'conflict':
      // The server names who and what (`author#N`, `entity#…`); the toast puts names there.
      return `Conflict: ${namedAuthors(r.message, me, names)}`;
    case 'rate_limited':
      return `Slow down: ${r.message}`;
    default:
      return `Refused (${r.code}): ${r.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Rotations in the inspector are Euler angles. (Absolute edits become delta commands through
// the protocol's own rule: `transform_commands` in the wasm package.)

/** Euler angles in degrees (XYZ order, as three.js uses) to a quaternion. */
export function quatFromEulerDeg([x, y, z]: Vec3): Quat {
  const r = Math.PI / 360;
  const [c1, c2, c3] = [Math.cos(x * r), Math.cos(y * r), Math.cos(z * r)];
  const [s1, s2, s3] = [Math.sin(x * r), Math.sin(y * r), Math.sin(z * r)];
  return [
    s1 * c2 * c3 + c1 * s2 * s3,
    c1 * s2 * c3 - s1 * c2 * s3,
    c1 * c2 * s3 + s1 * s2 * c3,
    c1 * c2 * c3 - s1 * s2 * s3,
  ];
}

/** A quaternion to Euler angles in degrees (XYZ order). */
export function eulerDegFromQuat([x, y, z, w]: Quat): Vec3 {
  const m11 = 1 - 2 * (y * y + z * z);
  const m12 = 2 * (x * y - w * z);
  const m13 = 2 * (x * z + w * y);
  const m23 = 2 * (y * z - w * x);
  const m33 = 1 - 2 * (x * x + y * y);
  const m22 = 1 - 2 * (x * x + z * z);
  const m32 = 2 * (y * z + w * x);
  const ey = Math.asin(Math.max(-1, Math.min(1, m13)));
  let ex: number;
  let ez: number;
  if (Math.abs(m13) < 0.9999999) {
    ex = Math.atan2(-m23, m33);
    ez = Math.atan2(-m12, m11);
  } else {
    ex = Math.atan2(m32, m22);
    ez = 0;
  }
  const d = 180 / Math.PI;
  return [ex * d, ey * d, ez * d];
}

export type Command = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Entity ids: (author << 32) | counter. New ids continue after every own id ever seen here.

export function entityAuthor(id: number): number {
  return Math.floor(id / 2 ** 32);
}

export function entityCounter(id: number): number {
  return id % 2 ** 32;
}


export function displayName(e: Pick<EntityView, 'id' | 'name' | 'kind'>): string {
  if (e.name) return e.name;
  const kind = e.kind.charAt(0).toUpperCase() + e.kind.slice(1);
  return `${kind} ${entityAuthor(e.id)}.${entityCounter(e.id)}`;
}

// ---------------------------------------------------------------------------------------------
// Colors: the scene stores linear RGBA; color inputs speak sRGB hex.

export function srgbToLinear(c: number): number {
  return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
}

export function linearToSrgb(c: number): number {
  return c <= 0.0031308 ? c * 12.92 : 1.055 * c ** (1 / 2.4) - 0.055;
}

export function hexToLinear(hex: string): [number, number, number, number] {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex.trim());
  const v = m ? parseInt(m[1], 16) : 0xffffff;
  const rgb = [(v >> 16) & 255, (v >> 8) & 255, v & 255].map((c) => srgbToLinear(c / 255));
  return [rgb[0], rgb[1], rgb[2], 1];
}

export function linearToHex([r, g, b]: [number, number, number, number]): string {
  return `#${[r, g, b]
    .map((c) => Math.round(Math.min(1, Math.max(0, linearToSrgb(c))) * 255).toString(16).padStart(2, '0'))
    .join('')}`;
}

// ---------------------------------------------------------------------------------------------
// Keyboard shortcuts.

export type Action =
  | { kind: 'mode' }
  | { kind: 'elements'; mode: 'vertex' | 'edge' | 'face' }
  | { kind: 'extrude' }
  | { kind: 'subdivide' }
  | { kind: 'smooth'; levels: number }
  | { kind: 'duplicate' }
  | { kind: 'mirror' }
  | { kind: 'weld' }
  | { kind: 'box' }
  | { kind: 'undo' }
  | { kind: 'redo' }
  | { kind: 'tool'; tool: Tool }
  | { kind: 'delete' }
  | { kind: 'deselect' }
  | { kind: 'telemetry' }
  | { kind: 'none' };

/** Modifier keys of a key press (Ctrl, or Cmd on a Mac). */
export interface Modifiers {
  ctrl?: boolean;
  shift?: boolean;
}

/**
 * What a key press does. Ctrl+Z undoes the user's own last step, Ctrl+Shift+Z and Ctrl+Y redo
 * it; in a text field those keys stay the field's own undo.
 */
export function shortcut(key: string, inTextField: boolean, mods: Modifiers = {}): Action {
  if (mods.ctrl && !inTextField) {
    const k = key.toLowerCase();
    if (k === 'z') return { kind: mods.shift ? 'redo' : 'undo' };
    if (k === 'y') return { kind: 'redo' };
    if (key === '1' || key === '2' || key === '3') return { kind: 'smooth', levels: Number(key) };
    if (k === 'm') return { kind: 'mirror' };
    return { kind: 'none' };
  }
  if (mods.ctrl) return { kind: 'none' };
  if (inTextField) return key === 'Escape' ? { kind: 'deselect' } : { kind: 'none' };
  if (mods.shift && (key === 'D' || key === 'd')) return { kind: 'duplicate' };
  switch (key) {
    case 'Tab':
      return { kind: 'mode' };
    case '1':
      return { kind: 'elements', mode: 'vertex' };
    case '2':
      return { kind: 'elements', mode: 'edge' };
    case '3':
      return { kind: 'elements', mode: 'face' };
    case 'e':
    case 'E':
      return { kind: 'extrude' };
    case 'w':
    case 'W':
      return { kind: 'subdivide' };
    case 'b':
    case 'B':
      return { kind: 'box' };
    case 'm':
    case 'M':
      return { kind: 'weld' };
    case 'g':
    case 'G':
      return { kind: 'tool', tool: 'move' };
    case 'r':
    case 'R':
      return { kind: 'tool', tool: 'rotate' };
    case 's':
    case 'S':
      return { kind: 'tool', tool: 'scale' };
    case 'q':
    case 'Q':
      return { kind: 'tool', tool: 'select' };
    case 'x':
    case 'X':
    case 'Delete':
    case 'Backspace':
      return { kind: 'delete' };
    case 'Escape':
      return { kind: 'deselect' };
    case 't':
    case 'T':
      return { kind: 'telemetry' };
    default:
      return { kind: 'none' };
  }
}

// ---------------------------------------------------------------------------------------------
// Where a new object goes.

/** Grid step (metres) that new objects snap to: a unit object and a quarter-metre gap fit. */
export const PLACE_STEP_M = 1.5;

/**
 * Where a new unit-sized object goes: on the grid cell under the view centre (`centre`, the
 * point the camera orbits, on the ground), or, when something is already there, the nearest free
 * cell around it (nearest first; ties in a fixed order, so the same scene gives the same place).
 * A cell is taken when an entity's footprint (its scaled unit size, measured from its
 * translation) comes within a quarter metre of the new object's. Returns x and z.
 */
export function placeNew(centre: [number, number], taken: Transform[]): [number, number] {
  const snap = (v: number) => Math.round(v / PLACE_STEP_M) * PLACE_STEP_M;
  const [cx, cz] = [snap(centre[0]), snap(centre[1])];
  const free = (x: number, z: number) =>
    taken.every((t) => {
      const half = 0.5 * Math.max(Math.abs(t.scale[0]), Math.abs(t.scale[2]));
      const apart = Math.hypot(t.translation[0] - x, t.translation[2] - z);
      return apart >= half + 0.5 + 0.25;
    });
  const cells: [number, number, number][] = [];
  const reach = 25;
  for (let i = -reach; i <= reach; i += 1) {
    for (let j = -reach; j <= reach; j += 1) cells.push([i * i + j * j, i, j]);
  }
  cells.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  for (const [, i, j] of cells) {
    const x = cx + i * PLACE_STEP_M;
    const z = cz + j * PLACE_STEP_M;
    if (free(x, z)) return [x, z];
  }
  // A crowded neighbourhood: beside everything, past the farthest cell searched.
  return [cx + (reach + 1) * PLACE_STEP_M, cz];
}

// ---------------------------------------------------------------------------------------------
// History: the server's list of steps (GET /api/v1/sessions/{id}/history), shown newest first.

/** One step as the server lists it. */
export interface HistoryStep {
  serial: number;
  lamport: number;
  author: number;
  label: string;
  at_ms: number | null;
  kinds: string[];
  entries: number;
  entities: number[];
  elements: number;
  undone: boolean;
  redoable: boolean;
}

/** One row of the History panel. */
export interface HistoryRow {
  key: string;
  who: string;
  color: string;
  what: string;
  when: string;
  undone: boolean;
  /** The entity a click selects (the step's first). */
  entity: number | null;
}

function clock(ms: number): string {
  const d = new Date(ms);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** The panel's rows: who (you or Author N, in their colour), what, when, and undone or not. */
export function historyRows(steps: HistoryStep[], me: number | null, names: Record<string, string> = {}): HistoryRow[] {
  return steps.map((s) => {
    const what = s.label.charAt(0).toUpperCase() + s.label.slice(1);
    const elements = s.elements > 0 ? ` · ${s.elements} element${s.elements === 1 ? '' : 's'}` : '';
    return {
      key: `${s.author}.${s.lamport}`,
      who: authorLabel(s.author, me, names),
      color: authorColor(s.author),
      what: `${what}${elements}`,
      when: s.at_ms === null ? 'before restart' : clock(s.at_ms),
      undone: s.undone,
      entity: s.entities.length > 0 ? s.entities[0] : null,
    };
  });
}


// ---------------------------------------------------------------------------------------------
// Edit mode (Blender habits): Tab toggles it on the selected entity; 1/2/3 pick vertex, edge or
// face selection; click selects, Shift+click adds or removes; E extrudes the selected faces
// (Ctrl snaps the distance to the grid); X or Delete deletes the selected elements.

export type Mode = 'object' | 'edit';
export type ElementMode = 'vertex' | 'edge' | 'face';

/** An element id in the shape commands take it (`ElementId` in serde's JSON). */
export interface ElementKey {
  by: { lamport: number; author: number };
  index: number;
}

/** The editable mesh of one entity, as `edit_mesh_json` gives it. */
export interface EditMeshView {
  faces: { id: ElementKey; corners: number[] }[];
  vertices: { id: ElementKey; p: Vec3 }[];
  edges: { id: ElementKey; ends: [number, number] }[];
}

/** A stable text form of an element id (selection sets, data attributes). */
export function elementKey(k: ElementKey): string {
  return `${k.by.lamport}.${k.by.author}.${k.index}`;
}

/** For each triangle of the edit triangulation (each face's fan, in face order), its face. */
export function triangleFaces(mesh: EditMeshView): number[] {
  const out: number[] = [];
  mesh.faces.forEach((f, i) => {
    for (let t = 0; t + 2 < f.corners.length; t += 1) out.push(i);
  });
  return out;
}

function dist2(a: Vec3, b: Vec3): number {
  return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2;
}

/**
 * The element a click on face `face` at `local` (entity space) picks: the face, its nearest
 * corner, or its nearest side (by the side's midpoint).
 */
export function pickElement(mesh: EditMeshView, face: number, local: Vec3, mode: ElementMode): string | null {
  const f = mesh.faces[face];
  if (!f) return null;
  if (mode === 'face') return elementKey(f.id);
  const pos = (i: number) => mesh.vertices[i].p;
  if (mode === 'vertex') {
    let best = f.corners[0];
    for (const c of f.corners) if (dist2(pos(c), local) < dist2(pos(best), local)) best = c;
    return elementKey(mesh.vertices[best].id);
  }
  let best: [number, number] = [f.corners[0], f.corners[1]];
  let bestD = Infinity;
  f.corners.forEach((a, i) => {
    const b = f.corners[(i + 1) % f.corners.length];
    const [pa, pb] = [pos(a), pos(b)];
    const mid: Vec3 = [(pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2, (pa[2] + pb[2]) / 2];
    const d = dist2(mid, local);
    if (d < bestD) [best, bestD] = [[a, b], d];
  });
  const [a, b] = best;
  const e = mesh.edges.find((x) => (x.ends[0] === a && x.ends[1] === b) || (x.ends[0] === b && x.ends[1] === a));
  return e ? elementKey(e.id) : null;
}

/** A click's effect on the selection: replace it, or with Shift add (or remove) the element. */
export function toggleSelection(selected: string[], key: string | null, additive: boolean): string[] {
  if (key === null) return additive ? selected : [];
  if (!additive) return [key];
  return selected.includes(key) ? selected.filter((k) => k !== key) : [...selected, key];
}

/** Keeps only selected keys the mesh still has (after someone else's edit). */
export function keepSelection(selected: string[], mesh: EditMeshView): string[] {
  const present = new Set<string>([
    ...mesh.faces.map((f) => elementKey(f.id)),
    ...mesh.vertices.map((v) => elementKey(v.id)),
    ...mesh.edges.map((e) => elementKey(e.id)),
  ]);
  return selected.filter((k) => present.has(k));
}

/** The selected elements by kind, as commands name them. */
export function selectedElements(
  mesh: EditMeshView,
  selected: string[],
): { vertices: ElementKey[]; edges: ElementKey[]; faces: ElementKey[] } {
  const want = new Set(selected);
  return {
    vertices: mesh.vertices.filter((v) => want.has(elementKey(v.id))).map((v) => v.id),
    edges: mesh.edges.filter((e) => want.has(elementKey(e.id))).map((e) => e.id),
    faces: mesh.faces.filter((f) => want.has(elementKey(f.id))).map((f) => f.id),
  };
}

/** Grid step an extrude distance snaps to with Ctrl held, metres. */
export const EXTRUDE_SNAP_M = 0.25;

/** The extrude distance for a mouse moved `pixelsUp` (up is outwards), at `metresPerPixel`. */
export function extrudeDistance(pixelsUp: number, metresPerPixel: number, snap: boolean): number {
  const d = pixelsUp * metresPerPixel;
  return snap ? Math.round(d / EXTRUDE_SNAP_M) * EXTRUDE_SNAP_M : Math.round(d * 1000) / 1000;
}

/** The extrude command of the selected faces (one undo step). */
export function extrudeCommand(entity: number, faces: ElementKey[], distance: number, snap: boolean): Command {
  return {
    ExtrudeFaces: {
      entity,
      faces,
      direction: { Normal: { distance_m: distance } },
      snap_m: snap ? EXTRUDE_SNAP_M : null,
    },
  };
}

/** The vertices (indices) the selected elements move: selected vertices, face corners, edge ends. */
export function selectedVertexIndices(mesh: EditMeshView, selected: string[]): number[] {
  const want = new Set(selected);
  const out = new Set<number>();
  mesh.vertices.forEach((v, i) => want.has(elementKey(v.id)) && out.add(i));
  for (const f of mesh.faces) if (want.has(elementKey(f.id))) for (const c of f.corners) out.add(c);
  for (const e of mesh.edges) if (want.has(elementKey(e.id))) for (const c of e.ends) out.add(c);
  return [...out].sort((a, b) => a - b);
}

/**
 * G in edit mode: the vertices `indices` moved by `delta` (entity space), as `MoveVertices`
 * takes them; with `snap`, each lands on the grid of that step.
 */
export function grabCommand(entity: number, mesh: EditMeshView, indices: number[], delta: Vec3, snap: number | null): Command {
  const q = (x: number) => (snap ? Math.round(x / snap) * snap : x);
  const moves = indices.map((i) => {
    const p = mesh.vertices[i].p;
    return [mesh.vertices[i].id, [q(p[0] + delta[0]), q(p[1] + delta[1]), q(p[2] + delta[2])]];
  });
  return { MoveVertices: { entity, moves } };
}

/** M in edit mode: the selected vertices merged into one at their centre (the first keeps its id). */
export function weldCommand(entity: number, mesh: EditMeshView, indices: number[]): Command | null {
  if (indices.length < 2) return null;
  return { Weld: { entity, groups: [indices.map((i) => mesh.vertices[i].id)], at_center: true } };
}

// ---------------------------------------------------------------------------------------------
// Several objects selected (Shift+click): the last clicked is active (the gizmo and the
// inspector follow it); a gizmo drag moves the others by the same change.

/** A click on `id` (Shift: `additive`) given the active selection and the others selected. */
export function clickSelect(
  active: number | null,
  also: number[],
  id: number | null,
  additive: boolean,
): { active: number | null; also: number[] } {
  if (!additive || id === null) return { active: id, also: [] };
  if (id === active) {
    // Shift+click on the active one deselects it; the last of the others becomes active.
    const rest = also.filter((x) => x !== id);
    return { active: rest.length > 0 ? rest[rest.length - 1] : null, also: rest.slice(0, -1) };
  }
  if (also.includes(id)) return { active, also: also.filter((x) => x !== id) };
  return { active: id, also: active === null ? also : [...also, active] };
}

function quatMul(a: Quat, b: Quat): Quat {
  const [ax, ay, az, aw] = a;
  const [bx, by, bz, bw] = b;
  return [
    aw * bx + ax * bw + ay * bz - az * by,
    aw * by - ax * bz + ay * bw + az * bx,
    aw * bz + ax * by - ay * bx + az * bw,
    aw * bw - ax * bx - ay * by - az * bz,
  ];
}

/** `other` changed the way one drag changed `from` into `to`: moved, turned and scaled alike. */
export function sameChange(from: Transform, to: Transform, other: Transform): Transform {
  const [x, y, z, w] = from.rotation;
  const turn = quatMul(to.rotation, [-x, -y, -z, w]);
  return {
    translation: [0, 1, 2].map((i) => other.translation[i] + to.translation[i] - from.translation[i]) as Vec3,
    rotation: quatMul(turn, other.rotation),
    scale: [0, 1, 2].map((i) => other.scale[i] * (to.scale[i] / from.scale[i])) as Vec3,
  };
}

/** Gizmo snapping steps: translation (m), rotation (degrees), scale; `null` is off. */
export const SNAP_STEPS: (number | null)[] = [null, 0.1, 0.25, 0.5, 1];

/** A screen rectangle (client pixels), corners in any order. */
export interface Rect {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/**
 * B in edit mode: the elements of the current kind whose screen position (a vertex, a face's
 * centre, an edge's midpoint; `project` gives it, `null` when behind the camera) lies in `rect`,
 * seen through the mesh (as Blender's X-ray box select).
 */
export function boxSelect(
  mesh: EditMeshView,
  mode: ElementMode,
  project: (p: Vec3) => [number, number] | null,
  rect: Rect,
): string[] {
  const [lx, hx] = [Math.min(rect.x0, rect.x1), Math.max(rect.x0, rect.x1)];
  const [ly, hy] = [Math.min(rect.y0, rect.y1), Math.max(rect.y0, rect.y1)];
  const inside = (p: Vec3) => {
    const s = project(p);
    return s !== null && s[0] >= lx && s[0] <= hx && s[1] >= ly && s[1] <= hy;
  };
  const mean = (idx: number[]): Vec3 =>
    [0, 1, 2].map((k) => idx.reduce((sum, i) => sum + mesh.vertices[i].p[k], 0) / idx.length) as Vec3;
  if (mode === 'vertex') return mesh.vertices.filter((v) => inside(v.p)).map((v) => elementKey(v.id));
  if (mode === 'edge') return mesh.edges.filter((e) => inside(mean(e.ends))).map((e) => elementKey(e.id));
  return mesh.faces.filter((f) => inside(mean(f.corners))).map((f) => elementKey(f.id));
}

// ---------------------------------------------------------------------------------------------
// Others' element selections (edit mode): latest per member, forgotten a few seconds after the
// last update (they are repeated every second while they stand).

export const ELEMENT_SELECTION_TTL_MS = 3000;

export interface RemoteElements {
  entity: number;
  elements: string[];
  at: number;
}

/** Applies an element-selection event: `entity: null` (left edit mode) forgets the member's. */
export function applyElementSelection(
  selections: Map<number, RemoteElements>,
  e: { author: number; entity: number | null; elements: ElementKey[] },
  now: number,
): Map<number, RemoteElements> {
  const next = new Map(selections);
  if (e.entity === null || e.elements.length === 0) next.delete(e.author);
  else next.set(e.author, { entity: e.entity, elements: e.elements.map(elementKey), at: now });
  return next;
}

/** The selections still shown. */
export function freshElementSelections(selections: Map<number, RemoteElements>, now: number): Map<number, RemoteElements> {
  return new Map([...selections].filter(([, s]) => now - s.at <= ELEMENT_SELECTION_TTL_MS));
}

/**
 * R or S in edit mode: the vertices `indices` turned by `angle` radians about `axis` (a unit
 * vector, entity space) through their centre, or scaled by `factor` about it, as `MoveVertices`.
 */
export function turnOrScaleCommand(
  entity: number,
  mesh: EditMeshView,
  indices: number[],
  how: { angle: number; axis: Vec3 } | { factor: number },
): Command {
  const n = Math.max(indices.length, 1);
  const c = [0, 1, 2].map((k) => indices.reduce((s, i) => s + mesh.vertices[i].p[k], 0) / n) as Vec3;
  const moves = indices.map((i) => {
    const d: Vec3 = [0, 1, 2].map((k) => mesh.vertices[i].p[k] - c[k]) as Vec3;
    let r: Vec3;
    if ('factor' in how) {
      r = d.map((x) => x * how.factor) as Vec3;
    } else {
      // Rodrigues: d cos θ + (k × d) sin θ + k (k · d)(1 − cos θ).
      const [kx, ky, kz] = how.axis;
      const [cos, sin] = [Math.cos(how.angle), Math.sin(how.angle)];
      const dot = kx * d[0] + ky * d[1] + kz * d[2];
      const cross: Vec3 = [ky * d[2] - kz * d[1], kz * d[0] - kx * d[2], kx * d[1] - ky * d[0]];
      r = [0, 1, 2].map((k) => d[k] * cos + cross[k] * sin + how.axis[k] * dot * (1 - cos)) as Vec3;
    }
    return [mesh.vertices[i].id, [c[0] + r[0], c[1] + r[1], c[2] + r[2]]];
  });
  return { MoveVertices: { entity, moves } };
}

// ---------------------------------------------------------------------------------------------
// Reconnecting.

/** Waits before reconnect attempt `attempt` (1-based): 0.5 s doubling to 10 s, with ±20 %
 *  jitter (so a restarted server is not met by every client at once). */
export function reconnectDelayMs(attempt: number, random: number = Math.random()): number {
  const base = Math.min(10_000, 500 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.8 + 0.4 * random));
}
