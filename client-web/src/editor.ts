// The editor page: DOM UI (top bar, tools, outliner, inspector, toasts, telemetry), the 3D
// viewport, and the session. Every edit becomes signed commands; the replica (server order)
// decides what is shown, with local previews for drags until the server has spoken.

import { FINAL_CLOSES, Session, cleanDisplayName, ticketRole, transformCommands, type SessionEvent } from './session';
import type { TransportKind } from './net';
import { UploadRefused, fromHex, packGltf, uploadAsset } from './upload';
import { storeDisplayName, storedDisplayName } from './identity';
import {
  applyLeft,
  applyPresence,
  authorColor,
  authorLabel,
  bytesPerSecond,
  canEdit,
  displayName,
  entityAuthor,
  entityCounter,
  eulerDegFromQuat,
  hexToLinear,
  linearToHex,
  newTelemetry,
  perSecond,
  placeNew,
  presentPeople,
  quatFromEulerDeg,
  readOnlyReason,
  refusalText,
  shortcut,
  historyRows,
  namedEntities,
  elementKey,
  extrudeCommand,
  extrudeDistance,
  keepSelection,
  pickElement,
  selectedElements,
  toggleSelection,
  triangleFaces,
  type EditMeshView,
  type ElementKey,
  type ElementMode,
  type Mode,
  grabCommand,
  selectedVertexIndices,
  weldCommand,
  turnOrScaleCommand,
  clickSelect,
  sameChange,
  SNAP_STEPS,
  boxSelect,
  applyElementSelection,
  freshElementSelections,
  type RemoteElements,
  type HistoryStep,
  shownSelections,
  trim,
  type Command,
  type EntityView,
  type Person,
  type Primitive,
  type Role,
  type SceneView,
  type Tool,
  type Transform,
  type Vec3,
} from './state';
import { Viewport } from './viewport';

/** After this long without a renderer the editor says the 3D view is still starting. */
const SLOW_RENDERER_MS = 5000;
const PRIMITIVES: Primitive[] = ['Cube', 'Pyramid', 'Plane', 'Cylinder', 'Sphere'];
const TOOLS: [Tool, string, string][] = [
  ['select', 'Select', 'Q'],
  ['move', 'Move', 'G'],
  ['rotate', 'Rotate', 'R'],
  ['scale', 'Scale', 'S'],
];

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

export class Editor {
  private session: Session;
  private ticket: string;
  private viewport!: Viewport;
  private view: SceneView = { position: 0, name: null, entities: [], selections: [], names: {}, members: [] };
  private role: Role | null;
  private author: number | null = null;
  private tool: Tool = 'select';
  private selected: number | null = null;
  /** Others selected with Shift besides the active `selected`. */
  private also: number[] = [];
  private people = new Map<number, Person>();
  /** Others' drags in progress, by entity (the protocol's rule, read from the wasm package). */
  private liveTransforms = new Map<number, { author: number; transform: Transform }>();
  private lastPreviewAt = 0;
  /** This user's released drags still shown until the server has spoken, by entity. */
  private held = new Map<number, Transform>();
  private telemetry = newTelemetry();
  private connection = 'connecting';
  /** Reconnect attempts made so far (shown in the status). */
  private reconnects = 0;
  private counterKey = '';
  private synced = false;
  private lastPoint: Vec3 | null = null;
  private lastPresence = 0;

  // DOM
  private root = h('div', { class: 'editor' });
  private status = h('span', { class: 'status', 'data-testid': 'connection' }, 'Connecting…');
  private peopleList = h('ul', { class: 'people', 'aria-label': 'People' });
  private sessionLabel = h('span', { class: 'session' });
  private banner = h('p', { class: 'banner', role: 'note', hidden: '' });
  /** The display name this identity goes by (stored with it), once chosen. */
  private myName: string | null = null;
  private nameInput = h('input', {
    type: 'text',
    id: 'display-name',
    autocomplete: 'nickname',
    maxlength: '64',
    placeholder: 'e.g. Ada',
    'data-testid': 'display-name',
  }) as HTMLInputElement;
  private nameForm = h(
    'form',
    { class: 'name-form', hidden: '', 'aria-label': 'Your name', 'data-testid': 'name-form' },
    h('label', { for: 'display-name' }, 'Your name, as others see it '),
    this.nameInput,
    h('button', { type: 'submit' }, 'Save'),
    h('button', { type: 'reset', title: 'Go by "Author N" for now; Rename in the people list later' }, 'Not now'),
  ) as HTMLFormElement;
  private toolButtons = new Map<Tool, HTMLButtonElement>();
  private editButtons: HTMLButtonElement[] = [];
  private outliner = h('ul', { class: 'outliner', 'aria-label': 'Outliner' });
  private inspector = h('form', { class: 'inspector', 'aria-label': 'Inspector' });
  private fields = new Map<string, HTMLInputElement>();
  private toasts = h('div', { class: 'toasts', 'aria-live': 'polite' });
  private overlay = h('dl', { class: 'telemetry', 'aria-label': 'Telemetry', hidden: '' });
  private canvas = h('canvas', { 'aria-label': 'Scene view', 'data-testid': 'viewport' });
  private undoButton = h('button', { type: 'button', title: 'Undo your last step (Ctrl+Z)', 'data-testid': 'undo' }, 'Undo');
  private redoButton = h('button', { type: 'button', title: 'Redo (Ctrl+Shift+Z)', 'data-testid': 'redo' }, 'Redo');
  /** Steps of everyone, newest first, from the server's history; undone ones struck through. */
  private historyList = h('ol', { class: 'history', 'aria-label': 'History', 'data-testid': 'history' });
  private historyTimer = 0;
  private historyLoading = false;
  // Edit mode.
  private mode: Mode = 'object';
  private elementMode: ElementMode = 'face';
  private editMesh: EditMeshView | null = null;
  /** The edited entity's geometry revision the edit view shows (reloaded when it changes). */
  private editGeometry = '';
  private editSel: string[] = [];
  /** An extrude in progress: mouse travel up from `startY` is the distance. */
  private extruding: { entity: number; faces: ElementKey[]; startY: number; perPixel: number; distance: number; snap: boolean } | null =
    null;
  /** G in edit mode: the selected elements' vertices follow the mouse in the view plane. */
  private grabbing: {
    kind: 'grab' | 'rotate' | 'scale';
    entity: number;
    indices: number[];
    startX: number;
    startY: number;
    /** The selection's centre on screen (R and S measure the mouse around it). */
    pivot: [number, number];
    axis: Vec3;
    command: Command | null;
  } | null = null;
  /** A committed edit's preview stays until the replica has the result (or it is refused). */
  private previewHeld = false;
  private pointer = { x: 0, y: 0 };
  /** B in edit mode: waiting for a drag (`from` once the button is down), then a rectangle. */
  private boxing: { from: [number, number] | null; additive: boolean } | null = null;
  private boxDiv = h('div', { class: 'box-select', hidden: '' });
  /** Others' element selections, by author; what this member last sent of its own, and when. */
  private remoteElements = new Map<number, RemoteElements>();
  private sentSelection = { key: '', at: 0 };
  /** Others' mesh-edit previews, by entity, and the serial of each one drawn. */
  private liveEdits = new Map<number, { author: number; serial: number }>();
  private drawnEdits = new Map<number, number>();
  private lastEditPreviewAt = 0;
  private modeButtons = new Map<Mode | ElementMode, HTMLButtonElement>();
  private editPalette = h('div', { class: 'palette edit', role: 'toolbar', 'aria-label': 'Mesh tools', hidden: '' });
  /** Downloads the session's durable scene as GLB (the server's export, authorised by the ticket). */
  private exportButton = h(
    'button',
    { type: 'button', 'data-testid': 'export-gltf', title: 'Download the scene as glTF (GLB)' },
    'Export glTF',
  );

  private importButton = h(
    'button',
    { type: 'button', 'data-testid': 'import-gltf', title: 'Add a glTF file (.glb, or .gltf with its .bin: choose both) — or drop them on the view' },
    'Import glTF',
  );
  private importInput = h('input', {
    type: 'file',
    accept: '.glb,.gltf,.bin,model/gltf-binary,model/gltf+json',
    multiple: '',
    hidden: '',
  });
  private importStatus = h('span', { class: 'import-status', 'data-testid': 'import-status', 'aria-live': 'polite' });

  constructor(
    seed: Uint8Array,
    ticket: string,
    sessionId: string,
    private prefer: TransportKind | null,
    saved: Uint8Array | null = null,
  ) {
    this.ticket = ticket;
    this.session = new Session(seed, ticket, sessionId, saved);
    this.role = ticketRole(ticket);
    this.sessionLabel.textContent = `Session ${sessionId.slice(0, 8)}`;
    this.exportButton.addEventListener('click', () => void this.exportGltf(ticket, sessionId));
    this.importButton.addEventListener('click', () => {
      if (this.guard()) this.importInput.click();
    });
    this.importInput.addEventListener('change', () => {
      const files = [...(this.importInput.files ?? [])];
      this.importInput.value = '';
      if (files.length > 0) void this.importFiles(files);
    });
    this.undoButton.addEventListener('click', () => this.undo(false));
    this.redoButton.addEventListener('click', () => this.undo(true));
  }

  /** Undo (or redo) of this user's own last step; the server decides and says why not. */
  private undo(redo: boolean): void {
    if (!this.guard()) return;
    this.submit([redo ? { Redo: { step: null } } : { Undo: { step: null } }]);
  }

  /** Reloads the History panel soon (once per burst of changes). */
  private scheduleHistory(): void {
    if (this.historyTimer !== 0) return;
    this.historyTimer = window.setTimeout(() => {
      this.historyTimer = 0;
      void this.loadHistory();
    }, 200);
  }

  private async loadHistory(): Promise<void> {
    if (this.historyLoading) {
      this.scheduleHistory();
      return;
    }
    this.historyLoading = true;
    try {
      const r = await fetch(`/api/v1/sessions/${this.session.sessionId}/history?limit=50`, {
        headers: { 'X-Meshwork-Ticket': this.ticket },
      });
      if (!r.ok) return;
      const page = (await r.json()) as { steps: HistoryStep[] };
      this.renderHistory(page.steps);
    } catch {
      // The next change tries again.
    } finally {
      this.historyLoading = false;
    }
  }

  private renderHistory(steps: HistoryStep[]): void {
    const rows = historyRows(steps, this.author, this.view.names).map((r) => {
      const dot = h('span', { class: 'dot', 'aria-hidden': 'true' });
      dot.style.background = r.color;
      const what = r.undone ? h('s', {}, r.what) : h('span', {}, r.what);
      const b = h(
        'button',
        { type: 'button', 'data-undone': String(r.undone), title: r.undone ? 'Undone' : 'Select what it changed' },
        dot,
        h('span', { class: 'who' }, r.who),
        ' ',
        what,
        h('span', { class: 'when' }, r.when),
      );
      const entity = r.entity;
      if (entity !== null) b.addEventListener('click', () => this.select(this.entity(entity) ? entity : null));
      return h('li', { 'data-key': r.key }, b);
    });
    if (rows.length === 0) rows.push(h('li', { class: 'empty' }, 'Nothing yet.'));
    this.historyList.replaceChildren(...rows);
  }

  /**
   * Imports a glTF file (a `.glb`, or a `.gltf` with the files it names, chosen or dropped
   * together): uploaded in checked, resumable chunks (progress in the top bar), then one signed
   * `Import` of all its objects (one undo step).
   */
  private async importFiles(files: File[]): Promise<void> {
    if (!this.guard()) return;
    this.importButton.disabled = true;
    const show = (text: string) => {
      this.importStatus.textContent = text;
    };
    let name = files[0]?.name ?? 'file';
    try {
      show(`Reading ${name}…`);
      const packed = await packGltf(files);
      name = packed.name;
      const { asset, status } = await uploadAsset(
        packed.bytes,
        `/api/v1/sessions/${this.session.sessionId}/assets`,
        this.ticket,
        (received, total) => show(`Uploading ${name}: ${Math.floor((100 * received) / Math.max(1, total))} %`),
      );
      const count = status.entities?.length ?? 0;
      const first = this.newEntityId();
      if (first === null) {
        this.toast(`Import of ${name} waits for the connection: try again once connected.`, 'error');
        return;
      }
      if (count === 0) {
        this.toast(`${name} holds no objects to import.`, 'error');
        return;
      }
      // The import takes `count` ids from `first` on.
      localStorage.setItem(this.counterKey, String(entityCounter(first) + count - 1));
      this.submit([{ Import: { asset: fromHex(asset), first, count } }]);
      this.toast(`Imported ${name}: ${count} object${count === 1 ? '' : 's'}`, 'info');
    } catch (e) {
      const why = e instanceof UploadRefused ? e.message : `the connection failed (${(e as Error).message})`;
      this.toast(`Import of ${name} failed: ${why}`, 'error');
    } finally {
      show('');
      this.importButton.disabled = false;
    }
  }

  /** Fetches the export with the ticket in a header (never in a URL) and saves it as a file. */
  private async exportGltf(ticket: string, sessionId: string): Promise<void> {
    this.exportButton.disabled = true;
    try {
      const r = await fetch(`/api/v1/sessions/${sessionId}/export.glb`, {
        headers: { 'X-Meshwork-Ticket': ticket },
      });
      if (!r.ok) {
        const body = (await r.json().catch(() => ({}))) as { error?: string };
        this.toast(`Export failed: ${body.error ?? r.statusText}`, 'error');
        return;
      }
      const url = URL.createObjectURL(await r.blob());
      const a = h('a', { href: url, download: `meshwork-${sessionId.slice(0, 8)}.glb` });
      document.body.append(a);
      a.click();
      a.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      this.toast(`Export failed: ${(e as Error).message}`, 'error');
    } finally {
      this.exportButton.disabled = false;
    }
  }

  async mount(into: HTMLElement): Promise<void> {
    into.replaceChildren(this.build());
    // The name this browser goes by; the first visit asks for one (editing does not wait).
    this.myName = await storedDisplayName().catch(() => null);
    if (this.myName === null) this.askName();
    // A glTF file dropped anywhere on the editor is imported.
    into.addEventListener('dragover', (e) => {
      if (e.dataTransfer?.types.includes('Files')) {
        e.preventDefault();
        e.dataTransfer.dropEffect = 'copy';
      }
    });
    into.addEventListener('drop', (e) => {
      const files = [...(e.dataTransfer?.files ?? [])];
      if (files.length === 0) return;
      e.preventDefault();
      void this.importFiles(files);
    });
    this.viewport = new Viewport(this.canvas, {
      positions: (id) => this.session.conn.mesh_positions(id),
      normals: (id) => this.session.conn.mesh_normals(id),
      indices: (id) => this.session.conn.mesh_indices(id),
      presenceTickMs: () => this.session.conn.presence_tick_ms(),
    });
    this.viewport.onDragEnd = (id, from, to) => {
      this.commitTransform(id, from, to);
      if (this.editable()) this.session.preview(id, null);
    };
    this.viewport.onDragMove = (id, to) => this.dragMoved(id, to);
    this.viewport.onPick = (id, additive) => this.select(id, additive);
    this.viewport.onHover = (p) => this.sendPresence(p);
    this.viewport.onEditPick = (face, local, additive) => this.editPick(face, local, additive);
    this.viewport.onEditGizmo = (moved, done) => this.editGizmoMoved(moved, done);
    window.addEventListener('pointermove', (e) => {
      this.pointer = { x: e.clientX, y: e.clientY };
      if (this.extruding) this.updateExtrude(e.clientY, e.ctrlKey);
      if (this.grabbing) this.updateGrab(e.clientX, e.clientY, e.ctrlKey);
      if (this.boxing?.from) this.drawBox(this.boxing.from, [e.clientX, e.clientY]);
    });
    window.addEventListener('pointerup', (e) => {
      const b = this.boxing;
      if (!b?.from) return;
      this.finishBox(b.from, [e.clientX, e.clientY], b.additive || e.shiftKey);
    });
    this.canvas.addEventListener(
      'pointerdown',
      (e) => {
        if (this.boxing && e.button === 0) {
          e.stopPropagation();
          this.boxing.from = [e.clientX, e.clientY];
          return;
        }
        if ((!this.extruding && !this.grabbing) || e.button !== 0) return;
        e.stopPropagation();
        if (this.extruding) this.commitExtrude();
        else this.commitGrab();
      },
      { capture: true },
    );
    // The renderer starts beside the connection, not before it: a GPU that is slow to hand out a
    // device (a busy or software GPU process can take many seconds) must not keep the user from
    // joining, nor hide a refusal (a revoked invite) behind "Connecting…". The scene graph is
    // kept up to date meanwhile and drawn once the renderer is up.
    const rendering = this.viewport.start().then(
      () => this.viewport.invalidate(),
      (e: unknown) => this.toast(`The 3D view could not start: ${(e as Error).message}`, 'error'),
    );
    const slow = window.setTimeout(() => {
      if (this.viewport.backend === 'starting') this.toast('The 3D view is still starting: the GPU is busy.', 'info');
    }, SLOW_RENDERER_MS);
    void rendering.finally(() => window.clearTimeout(slow));
    this.applyRole();
    this.session.onEvent = (e) => this.onEvent(e);
    this.session.onTransportNote = (n) => this.toast(n, 'info');
    window.addEventListener('keydown', (e) => this.onKey(e));
    window.setInterval(() => this.tick(), 250);
    (window as unknown as { meshwork: unknown }).meshwork = this.debugHandle();
    if (this.session.conn.synced()) {
      // Restored from what a reload while offline kept: the scene and the pending edits show at
      // once, and editing goes on while the connection comes back.
      this.synced = true;
      this.author = this.session.conn.author() ?? null;
      if (this.author !== null) this.counterKey = `meshwork.counter.${this.session.sessionId}.${this.author}`;
      this.connection = 'reconnecting';
      this.refresh();
    }
    // Never throws: a first connection that fails is retried like a dropped one.
    await this.session.open(this.prefer);
    if (this.connection === 'connecting') this.connection = 'joining';
    this.renderStatus();
  }

  // ------------------------------------------------------------------------------- layout

  private build(): HTMLElement {
    const top = h(
      'header',
      { class: 'topbar' },
      h('strong', { class: 'brand' }, 'Meshwork'),
      this.sessionLabel,
      this.status,
      this.peopleList,
      this.importStatus,
      this.importButton,
      this.importInput,
      this.exportButton,
    );
    this.editButtons.push(this.undoButton, this.redoButton, this.importButton);
    const palette = h('div', { class: 'palette', role: 'toolbar', 'aria-label': 'Tools' });
    palette.append(this.undoButton, this.redoButton, h('span', { class: 'sep', 'aria-hidden': 'true' }));
    const modeButton = (key: Mode | ElementMode, label: string, title: string, act: () => void) => {
      const b = h('button', { type: 'button', 'aria-pressed': 'false', title, 'data-mode': key }, label);
      b.addEventListener('click', act);
      this.modeButtons.set(key, b);
      return b;
    };
    palette.append(
      modeButton('object', 'Object', 'Object mode (Tab)', () => this.mode === 'edit' && this.toggleEdit()),
      modeButton('edit', 'Edit', 'Edit the selected mesh (Tab)', () => this.mode === 'object' && this.toggleEdit()),
      h('span', { class: 'sep', 'aria-hidden': 'true' }),
    );
    this.editPalette.append(
      modeButton('vertex', 'Vertex', 'Select vertices (1)', () => this.setElementMode('vertex')),
      modeButton('edge', 'Edge', 'Select edges (2)', () => this.setElementMode('edge')),
      modeButton('face', 'Face', 'Select faces (3)', () => this.setElementMode('face')),
      h('span', { class: 'sep', 'aria-hidden': 'true' }),
    );
    for (const [label, title, act] of [
      ['Extrude', 'Extrude the selected faces (E; move the mouse, click; Ctrl snaps)', () => this.beginExtrude()],
      ['Subdivide', 'Subdivide the selected faces (W)', () => this.subdivide()],
      ['Smooth', 'Catmull–Clark: the selected faces, or the whole mesh (Ctrl+1/2/3 for levels)', () => this.smooth(1)],
      ['Merge', 'Merge the selected vertices at their centre (M)', () => this.weld()],
      ['Mirror X', 'Mirror the mesh across its X plane (Ctrl+M)', () => this.mirror()],
      ['Delete elements', 'Delete the selected elements (X)', () => this.deleteElements()],
    ] as [string, string, () => void][]) {
      const b = h('button', { type: 'button', title }, label);
      b.addEventListener('click', act);
      this.editButtons.push(b);
      this.editPalette.append(b);
    }
    for (const [tool, label, key] of TOOLS) {
      const b = h('button', { type: 'button', 'aria-pressed': 'false', title: `${label} (${key})` }, label);
      b.addEventListener('click', () => this.setTool(tool));
      this.toolButtons.set(tool, b);
      palette.append(b);
    }
    const snap = h('select', { 'aria-label': 'Snap', title: 'Gizmo snapping: grid step (m), 15° turns, tenths of scale' });
    for (const step of SNAP_STEPS) snap.append(h('option', { value: String(step ?? '') }, step === null ? 'Snap off' : `Snap ${step} m`));
    snap.addEventListener('change', () => this.viewport.setSnap(snap.value === '' ? null : Number(snap.value)));
    palette.append(snap);
    palette.append(h('span', { class: 'sep', 'aria-hidden': 'true' }));
    for (const p of PRIMITIVES) {
      const b = h('button', { type: 'button' }, `Add ${p.toLowerCase()}`);
      b.addEventListener('click', () => this.add(p));
      this.editButtons.push(b);
      palette.append(b);
    }
    const del = h('button', { type: 'button', title: 'Delete (Del)' }, 'Delete');
    del.addEventListener('click', () => this.deleteSelected());
    this.editButtons.push(del);
    const color = h('input', { type: 'color', 'aria-label': 'Color', value: '#cccccc' });
    color.addEventListener('change', () => this.setColor(color.value));
    this.fields.set('palette-color', color);
    palette.append(del, h('label', { class: 'color' }, 'Color ', color));

    this.buildInspector();
    const side = h(
      'aside',
      { class: 'side' },
      h('section', { 'aria-labelledby': 'outliner-h' }, h('h2', { id: 'outliner-h' }, 'Outliner'), this.outliner),
      h('section', { 'aria-labelledby': 'inspector-h' }, h('h2', { id: 'inspector-h' }, 'Inspector'), this.inspector),
      h('section', { 'aria-labelledby': 'history-h' }, h('h2', { id: 'history-h' }, 'History'), this.historyList),
    );
    const main = h('main', { class: 'view' }, this.canvas, this.boxDiv, this.overlay, this.toasts);
    this.nameForm.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.saveName(this.nameInput.value);
    });
    this.nameForm.addEventListener('reset', () => {
      this.nameForm.hidden = true;
    });
    this.root.append(top, this.banner, this.nameForm, palette, this.editPalette, h('div', { class: 'body' }, main, side));
    this.renderTools();
    return this.root;
  }

  private buildInspector(): void {
    const field = (key: string, label: string, type = 'number', step = '0.1') => {
      const input = h('input', { type, step, name: key, 'aria-label': label, disabled: '' });
      input.addEventListener('change', () => this.inspectorChanged(key));
      input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') {
          e.preventDefault();
          input.blur();
        }
      });
      this.fields.set(key, input);
      return input;
    };
    const row = (label: string, ...inputs: HTMLInputElement[]) =>
      h('div', { class: 'row' }, h('span', { class: 'label' }, label), ...inputs);
    const axes = (key: string, label: string, step: string) =>
      ['x', 'y', 'z'].map((a) => field(`${key}.${a}`, `${label} ${a.toUpperCase()}`, 'number', step));
    this.inspector.append(
      row('Name', field('name', 'Name', 'text')),
      row('Position', ...axes('position', 'Position', '0.1')),
      row('Rotation °', ...axes('rotation', 'Rotation', '5')),
      row('Scale', ...axes('scale', 'Scale', '0.1')),
      row('Color', field('color', 'Entity color', 'color')),
    );
    this.inspector.addEventListener('submit', (e) => e.preventDefault());
  }

  // ------------------------------------------------------------------------------- events

  private onEvent(e: SessionEvent): void {
    const now = performance.now();
    switch (e.type) {
      case 'joined':
        this.author = e.author;
        this.role = e.role;
        // Less than the invite grants: an admin lowered it (the server keeps that across joins).
        this.roleSetByAdmin ||= e.role === 'viewer' && ticketRole(this.ticket) !== 'viewer';
        // A rejoin after a drop keeps its replica: live again at once (the catch-up follows).
        this.connection = this.synced ? 'live' : 'joined';
        if (this.reconnects > 0) this.toast('Reconnected: your offline edits are being sent.', 'info');
        this.counterKey = `meshwork.counter.${this.session.sessionId}.${e.author}`;
        this.applyRole();
        break;
      case 'join_refused':
        this.connection = 'refused';
        this.toast(`Could not join: ${e.message}`, 'error');
        break;
      case 'synced':
        this.synced = true;
        this.connection = 'live';
        this.refresh();
        this.announceName();
        this.scheduleHistory();
        break;
      case 'resyncing':
        this.connection = 'resyncing';
        this.telemetry.resyncs += 1;
        this.telemetry.lastResync = e.reason;
        // A replica that refused what it was sent says so: it is not a network hiccup.
        if (e.reason === 'forged_entry' || e.reason === 'unknown_author' || e.reason === 'unsigned_delta' || e.reason === 'bad_seal') {
          console.warn(`meshwork: refused an update from the server (${e.reason}); resyncing`);
        }
        break;
      case 'changed':
        this.readPreviews();
        this.refresh();
        this.refreshEdit();
        if (this.remoteElements.size > 0) this.renderRemoteElements();
        this.scheduleHistory();
        break;
      case 'ack':
        break;
      case 'refused': {
        this.telemetry.refusals += 1;
        if (e.code === 'conflict') this.telemetry.conflicts += 1;
        this.readPreviews();
        this.adding = null;
        if (this.previewHeld) {
          this.previewHeld = false;
          this.viewport.showPreview(null);
        }
        this.toast(
          namedEntities(refusalText(e, this.author, this.view.names), (id) => {
            const known = this.entity(id);
            return known ? displayName(known) : null;
          }),
          'error',
        );
        this.refresh();
        break;
      }
      case 'pong':
        this.telemetry.rttMs = now - e.nonce;
        break;
      case 'presence': {
        const known = this.people.has(e.author);
        this.people = applyPresence(this.people, e, Date.now());
        // Their cursor and camera move now, not at the next tick.
        this.viewport.people(presentPeople(this.people, Date.now()), this.author);
        // Someone (back) in view: their selection shows again.
        if (!known) this.refresh();
        break;
      }
      case 'left':
        this.people = applyLeft(this.people, e.author);
        this.viewport.people(presentPeople(this.people, Date.now()), this.author);
        this.refresh();
        break;
      case 'live':
        this.readPreviews();
        for (const id of e.entities) this.showRemoteEdit(id);
        this.redraw();
        break;
      case 'element_selection': {
        this.remoteElements = applyElementSelection(this.remoteElements, e, Date.now());
        this.renderRemoteElements();
        break;
      }
      case 'closed':
        // A final close (kicked, a protocol violation, untrusted) is followed by no reconnect:
        // the editor says it is no longer connected (the scene stays to look at).
        if (e.reason === 'Transport' || !this.synced || FINAL_CLOSES.has(e.reason)) {
          this.connection = 'closed';
          this.toast(`Disconnected: ${e.message || e.reason}`, 'error');
        } else {
          // The server said why it closes; the session reconnects unless that was final.
          this.toast(`Connection closed: ${e.message || e.reason}`, 'info');
        }
        break;
      case 'role': {
        // An admin changed this member's role: the tools follow at once.
        const was = this.role;
        this.role = e.role;
        this.roleSetByAdmin = true;
        this.applyRole();
        if (was !== e.role) this.toast(`An admin made you ${e.role === 'admin' ? 'an' : 'a'} ${e.role}.`, 'info');
        this.renderPeople();
        break;
      }
      case 'reconnecting':
        this.reconnects += 1;
        this.connection = 'reconnecting';
        // What was sent and not yet acknowledged now shows as pending offline: an add made
        // just before the drop, whose echo never came, stays in view.
        this.refresh();
        break;
    }
    this.renderStatus();
  }

  private onKey(e: KeyboardEvent): void {
    const t = e.target as HTMLElement | null;
    const inField = !!t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT');
    const action = shortcut(e.key, inField, { ctrl: e.ctrlKey || e.metaKey, shift: e.shiftKey });
    if (action.kind === 'tool' && action.tool !== 'select' && this.mode === 'edit') {
      // G, R, S in edit mode grab, turn or scale the selected elements (Blender), not the object.
      this.beginGrab(action.tool === 'move' ? 'grab' : action.tool);
      e.preventDefault();
      return;
    }
    switch (action.kind) {
      case 'mode':
        this.toggleEdit();
        break;
      case 'elements':
        if (this.mode !== 'edit') return;
        this.setElementMode(action.mode);
        break;
      case 'extrude':
        if (this.mode !== 'edit') return;
        this.beginExtrude();
        break;
      case 'subdivide':
        if (this.mode !== 'edit') return;
        this.subdivide();
        break;
      case 'smooth':
        if (this.mode !== 'edit') return;
        this.smooth(action.levels);
        break;
      case 'weld':
        if (this.mode !== 'edit') return;
        this.weld();
        break;
      case 'box':
        if (this.mode !== 'edit' || this.extruding || this.grabbing) return;
        this.boxing = { from: null, additive: e.shiftKey };
        this.viewport.editGizmo(null);
        this.viewport.modal = true;
        this.viewport.setOrbit(false);
        this.root.dataset.boxing = 'true';
        break;
      case 'mirror':
        if (this.mode !== 'edit') return;
        this.mirror();
        break;
      case 'duplicate':
        this.duplicate();
        break;
      case 'undo':
        this.undo(false);
        break;
      case 'redo':
        this.undo(true);
        break;
      case 'tool':
        this.setTool(action.tool);
        break;
      case 'delete':
        if (this.mode === 'edit') this.deleteElements();
        else this.deleteSelected();
        break;
      case 'deselect':
        if (inField) t?.blur();
        if (this.extruding) this.cancelExtrude();
        else if (this.grabbing) this.cancelGrab();
        else if (this.boxing) {
          this.boxing = null;
          this.boxDiv.hidden = true;
          this.viewport.modal = false;
          this.viewport.setOrbit(true);
          delete this.root.dataset.boxing;
        }
        else if (this.mode === 'edit') {
          this.editSel = [];
          this.renderEdit();
        } else this.select(null);
        break;
      case 'telemetry':
        this.overlay.hidden = !this.overlay.hidden;
        this.renderTelemetry();
        break;
      case 'none':
        return;
    }
    e.preventDefault();
  }

  private tick(): void {
    const now = performance.now();
    const t = this.telemetry;
    t.submitted = trim(t.submitted, now, (s) => s);
    const tr = this.session.transport;
    if (tr) {
      t.bytesIn.push([now, tr.bytesIn]);
      t.bytesOut.push([now, tr.bytesOut]);
      tr.bytesIn = 0;
      tr.bytesOut = 0;
    }
    t.bytesIn = trim(t.bytesIn, now, ([s]) => s);
    t.bytesOut = trim(t.bytesOut, now, ([s]) => s);
    // A presence heartbeat: others see who is here (and where they look) even when idle.
    if (now - this.lastPresence > 1000) this.sendPresence(this.lastPoint);
    this.viewport.people(presentPeople(this.people, Date.now()), this.author);
    this.session.tick();
    this.sendElementSelection(false);
    // A gesture held still: its preview is repeated, so the others keep showing it (they drop
    // a preview a second after its last update).
    if (performance.now() - this.lastEditPreviewAt > 500) {
      const x = this.extruding;
      const g = this.grabbing;
      if (x && x.distance !== 0) {
        this.lastEditPreviewAt = performance.now();
        this.session.editPreview(x.entity, extrudeCommand(x.entity, x.faces, x.distance, x.snap));
      } else if (g?.command) {
        this.lastEditPreviewAt = performance.now();
        this.session.editPreview(g.entity, g.command);
      }
    }
    if (this.remoteElements.size > 0) {
      const fresh = freshElementSelections(this.remoteElements, Date.now());
      if (fresh.size !== this.remoteElements.size) {
        this.remoteElements = fresh;
        this.renderRemoteElements();
      }
    }
    this.renderPeople();
    if (!this.overlay.hidden) this.renderTelemetry();
  }

  // ------------------------------------------------------------------------------- actions

  private editable(): boolean {
    // Offline (reconnecting with a replica) edits are signed and kept until the server is back.
    return canEdit(this.role) && (this.connection === 'live' || (this.connection === 'reconnecting' && this.synced));
  }

  /** Refuses an edit in the UI with the reason, before anything is sent. */
  private guard(): boolean {
    if (this.editable()) return true;
    this.toast(readOnlyReason(this.role, this.roleSetByAdmin) ?? 'Not connected yet.', 'error');
    return false;
  }

  /** Signs and sends; with a `label`, as one undo step (the protocol's rule for gestures). */
  private submit(commands: Command[], label?: string): number[] {
    if (commands.length === 0) return [];
    let seqs: number[];
    try {
      seqs = label === undefined ? this.session.submit(commands) : this.session.submitStep(commands, label);
    } catch (e) {
      // Not joined yet, or too many edits waiting to be sent: said, not thrown away silently.
      this.toast(`Not sent: ${e instanceof Error ? e.message : String(e)}`, 'error');
      return [];
    }
    const now = performance.now();
    for (let i = 0; i < commands.length; i += 1) this.telemetry.submitted.push(now);
    this.renderStatus();
    // Offline, the edit shows at once (the view applies it until the server judges it).
    if (this.connection !== 'live') this.refresh();
    return seqs;
  }

  private setTool(tool: Tool): void {
    if (tool !== 'select' && !canEdit(this.role)) {
      this.guard();
      return;
    }
    this.tool = tool;
    this.renderTools();
  }

  private add(primitive: Primitive): void {
    if (!this.guard() || this.author === null) return;
    const entity = this.newEntityId();
    if (entity === null) return;
    const y = primitive === 'Plane' ? 0 : 0.5;
    // Where the user is looking, beside what is already there (not all at the origin).
    const [x, z] = placeNew(this.viewport.viewCentre(), this.view.entities);
    this.submit([
      { Spawn: { entity, primitive, transform: { translation: [x, y, z], rotation: [0, 0, 0, 1], scale: [1, 1, 1] } } },
      { Select: { entities: [entity] } },
    ]);
    this.selected = entity;
    this.adding = entity;
    if (this.tool === 'select') this.tool = 'move';
    this.renderTools();
  }

  private deleteSelected(): void {
    if (this.selected === null) return;
    if (!this.guard()) return;
    const gone = this.selection().map((entity) => ({ Despawn: { entity } }));
    this.selected = null;
    this.also = [];
    this.submit([...gone, { Select: { entities: [] } }], 'Delete');
    this.refresh();
  }

  private select(id: number | null, additive = false): void {
    if (this.selected === id && !additive && this.also.length === 0) return;
    if (this.mode === 'edit') this.exitEdit();
    const next = clickSelect(this.selected, this.also, id, additive);
    this.selected = next.active;
    this.also = next.also;
    // Selection is shared (others see it highlighted) when this user may write; viewers keep
    // theirs local, since the server would refuse it.
    if (canEdit(this.role) && this.connection === 'live') {
      this.submit([{ Select: { entities: this.selection() } }]);
    }
    this.refresh();
  }

  /** Everything selected, the active one first. */
  private selection(): number[] {
    return this.selected === null ? [] : [this.selected, ...this.also];
  }

  /** Reads what previews show from the wasm package: others' drags and this user's held ones. */
  private readPreviews(): void {
    const conn = this.session.conn;
    const live = JSON.parse(conn.live_json()) as {
      transforms: { entity: number; author: number; transform: Transform }[];
      edits: { entity: number; author: number; serial: number }[];
    };
    this.liveTransforms = new Map(live.transforms.map((t) => [t.entity, t]));
    this.liveEdits = new Map(live.edits.map((t) => [t.entity, t]));
    const held = JSON.parse(conn.held_json()) as { entity: number; transform: Transform }[];
    // The newest held drag of an entity wins.
    this.held = new Map(held.map((h) => [h.entity, h.transform]));
  }

  /** Draws (or drops) another member's edit preview of `id`: their command on a copy here. */
  private showRemoteEdit(id: number): void {
    const r = this.liveEdits.get(id);
    if (!r) {
      if (this.drawnEdits.delete(id)) this.viewport.remoteEdit(id, null, '');
      return;
    }
    if (this.drawnEdits.get(id) === r.serial) return;
    const conn = this.session.conn;
    if (conn.preview_live_edit(id)) {
      this.drawnEdits.set(id, r.serial);
      this.viewport.remoteEdit(
        id,
        { positions: conn.preview_positions(), normals: conn.preview_normals(), indices: conn.preview_indices() },
        authorColor(r.author),
      );
    }
  }

  // ----------------------------------------------------------------------------- edit mode

  /** Tab: edit the selected entity's mesh, or back to object mode. */
  private toggleEdit(): void {
    if (this.mode === 'edit') {
      this.exitEdit();
      return;
    }
    if (this.selected === null) {
      this.toast('Select an object first, then Tab edits its mesh.', 'info');
      return;
    }
    if (!this.guard()) return;
    this.mode = 'edit';
    this.editSel = [];
    this.loadEditMesh(true);
    this.renderModes();
  }

  private exitEdit(): void {
    if (this.extruding) this.cancelExtrude();
    this.mode = 'object';
    this.sentSelection.key = '';
    this.editMesh = null;
    this.editSel = [];
    this.previewHeld = false;
    this.viewport.exitEdit();
    this.renderModes();
    this.sendElementSelection(true);
    this.refresh();
  }

  private setElementMode(mode: ElementMode): void {
    this.elementMode = mode;
    this.renderModes();
    this.renderEdit();
  }

  private renderModes(): void {
    for (const [key, b] of this.modeButtons) {
      const on = key === this.mode || (this.mode === 'edit' && key === this.elementMode);
      b.setAttribute('aria-pressed', String(on));
    }
    this.editPalette.hidden = this.mode !== 'edit';
    this.root.dataset.mode = this.mode;
  }

  /** Reads the edited entity's mesh from the replica (all of it: its own geometry only). */
  private loadEditMesh(enter: boolean): void {
    const id = this.selected;
    const e = this.entity(id);
    if (id === null || !e) {
      this.exitEdit();
      return;
    }
    const conn = this.session.conn;
    this.editMesh = JSON.parse(conn.edit_mesh_json(id)) as EditMeshView;
    this.editGeometry = e.geometry;
    const faces = triangleFaces(this.editMesh);
    const [pos, nor, idx] = [conn.edit_positions(id), conn.edit_normals(id), conn.edit_indices(id)];
    if (enter) this.viewport.enterEdit(id, pos, nor, idx, faces);
    else this.viewport.setEditMesh(pos, nor, idx, faces);
    if (this.previewHeld) {
      this.previewHeld = false;
      this.viewport.showPreview(null);
    }
    this.editSel = keepSelection(this.editSel, this.editMesh);
    this.renderEdit();
  }

  /** The replica moved on: reload the edit view if the edited mesh changed (or is gone). */
  private refreshEdit(): void {
    if (this.mode !== 'edit') return;
    const e = this.entity(this.selected);
    if (!e) {
      this.exitEdit();
      return;
    }
    if (e.geometry !== this.editGeometry) this.loadEditMesh(false);
  }

  private renderEdit(): void {
    const m = this.editMesh;
    if (!m || this.mode !== 'edit') return;
    const want = new Set(this.editSel);
    const faces: number[] = [];
    m.faces.forEach((f, i) => want.has(elementKey(f.id)) && faces.push(i));
    const selectedVertices: number[] = [];
    m.vertices.forEach((v, i) => want.has(elementKey(v.id)) && selectedVertices.push(i));
    const edges = m.edges.filter((e) => want.has(elementKey(e.id))).map((e) => [m.vertices[e.ends[0]].p, m.vertices[e.ends[1]].p] as [Vec3, Vec3]);
    this.viewport.setEditLit({
      faces,
      vertices: m.vertices.map((v) => v.p),
      selectedVertices,
      edges,
      dots: this.elementMode === 'vertex',
    });
    this.root.dataset.editSelection = String(this.editSel.length);
    this.sendElementSelection(true);
    // The gizmo (Move / Rotate / Scale tool) on the selected elements, at their centre.
    const indices = selectedVertexIndices(m, this.editSel);
    const centre =
      indices.length > 0 && this.tool !== 'select' && canEdit(this.role) && !this.extruding && !this.grabbing && !this.boxing
        ? ([0, 1, 2].map((k) => indices.reduce((s, i) => s + m.vertices[i].p[k], 0) / indices.length) as Vec3)
        : null;
    this.viewport.editGizmo(centre);
  }

  /** The gizmo on the selected elements moved: their vertices follow (committed on release). */
  private editGizmoMoved(moved: (p: Vec3) => Vec3, done: boolean): void {
    const m = this.editMesh;
    const entity = this.selected;
    if (!m || entity === null || this.mode !== 'edit') return;
    const indices = selectedVertexIndices(m, this.editSel);
    const command: Command = {
      MoveVertices: { entity, moves: indices.map((i) => [m.vertices[i].id, moved(m.vertices[i].p)]) },
    };
    const conn = this.session.conn;
    if (!done) {
      if (conn.preview_edit(JSON.stringify(command))) {
        this.viewport.showPreview({ positions: conn.preview_positions(), normals: conn.preview_normals(), indices: conn.preview_indices() });
      }
      const now = performance.now();
      if (now - this.lastEditPreviewAt >= 30) {
        this.lastEditPreviewAt = now;
        this.session.editPreview(entity, command);
      }
      return;
    }
    this.session.editPreview(entity, null);
    this.previewHeld = true;
    this.submit([command]);
  }

  /**
   * Tells the others what this member has selected in edit mode: at once when it changed
   * (`changed`), else again each second while it stands; once `null` on leaving edit mode.
   */
  private sendElementSelection(changed: boolean): void {
    if (this.connection !== 'live') return;
    const m = this.editMesh;
    const entity = this.mode === 'edit' && m ? this.selected : null;
    const key = `${entity}:${this.editSel.join(',')}`;
    const now = Date.now();
    if (key === this.sentSelection.key && (entity === null || now - this.sentSelection.at < 1000)) return;
    if (!changed && key === this.sentSelection.key && entity === null) return;
    this.sentSelection = { key, at: now };
    const chosen = m && entity !== null ? selectedElements(m, this.editSel) : { vertices: [], edges: [], faces: [] };
    this.session.elementSelection(entity, [...chosen.vertices, ...chosen.edges, ...chosen.faces]);
  }

  /** Draws the others' element selections on their entities, each in the member's colour. */
  private renderRemoteElements(): void {
    const shown = new Set<number>();
    for (const [author, sel] of this.remoteElements) {
      const e = this.entity(sel.entity);
      if (!e || author === this.author) continue;
      const conn = this.session.conn;
      const mesh = JSON.parse(conn.edit_mesh_json(sel.entity)) as EditMeshView;
      const positions = conn.edit_positions(sel.entity);
      const indices = conn.edit_indices(sel.entity);
      const want = new Set(sel.elements);
      const triangles: number[] = [];
      triangleFaces(mesh).forEach((f, t) => {
        if (!want.has(elementKey(mesh.faces[f].id))) return;
        for (let k = 0; k < 3; k += 1) {
          const i = indices[t * 3 + k];
          triangles.push(positions[i * 3], positions[i * 3 + 1], positions[i * 3 + 2]);
        }
      });
      const vertices = mesh.vertices.filter((v) => want.has(elementKey(v.id))).map((v) => v.p);
      const edges = mesh.edges
        .filter((x) => want.has(elementKey(x.id)))
        .map((x) => [mesh.vertices[x.ends[0]].p, mesh.vertices[x.ends[1]].p] as [Vec3, Vec3]);
      this.viewport.remoteSelection(author, sel.entity, { triangles, vertices, edges }, authorColor(author));
      shown.add(author);
    }
    for (const [author] of this.viewport.remoteSelectionList()) {
      if (!shown.has(author)) this.viewport.remoteSelection(author, 0, null, '');
    }
  }

  private editPick(face: number | null, local: Vec3 | null, additive: boolean): void {
    if (!this.editMesh || this.extruding) return;
    const key = face === null || local === null ? null : pickElement(this.editMesh, face, local, this.elementMode);
    this.editSel = toggleSelection(this.editSel, key, additive);
    this.renderEdit();
  }

  private editTarget(): { entity: number; mesh: EditMeshView } | null {
    if (this.mode !== 'edit' || this.selected === null || !this.editMesh) return null;
    if (!this.guard()) return null;
    return { entity: this.selected, mesh: this.editMesh };
  }

  /** E: the selected faces follow the mouse outwards until a click (Escape cancels). */
  private beginExtrude(): void {
    const t = this.editTarget();
    if (!t || this.extruding) return;
    const { faces } = selectedElements(t.mesh, this.editSel);
    if (faces.length === 0) {
      this.toast('Select faces to extrude (3, then click a face).', 'info');
      return;
    }
    const e = this.entity(t.entity);
    const perPixel = this.viewport.metresPerPixel(e ? e.translation : [0, 0, 0]);
    this.extruding = { entity: t.entity, faces, startY: this.pointer.y, perPixel, distance: 0, snap: false };
    this.viewport.editGizmo(null);
    this.viewport.modal = true;
    this.root.dataset.extruding = 'true';
  }

  private updateExtrude(y: number, snap: boolean): void {
    const x = this.extruding;
    if (!x) return;
    x.distance = extrudeDistance(x.startY - y, x.perPixel, snap);
    x.snap = snap;
    const cmd = extrudeCommand(x.entity, x.faces, x.distance, x.snap);
    // Others see it too, at most every 30 ms (the presence lane, latest wins).
    const now = performance.now();
    if (now - this.lastEditPreviewAt >= 30) {
      this.lastEditPreviewAt = now;
      this.session.editPreview(x.entity, x.distance !== 0 ? cmd : null);
    }
    const conn = this.session.conn;
    if (x.distance !== 0 && conn.preview_edit(JSON.stringify(cmd))) {
      this.viewport.showPreview({ positions: conn.preview_positions(), normals: conn.preview_normals(), indices: conn.preview_indices() });
    } else {
      this.viewport.showPreview(null);
    }
  }

  private commitExtrude(): void {
    const x = this.extruding;
    if (!x) return;
    this.extruding = null;
    this.viewport.modal = false;
    delete this.root.dataset.extruding;
    this.session.editPreview(x.entity, null);
    if (x.distance === 0) {
      this.viewport.showPreview(null);
      return;
    }
    // The preview stays until the result is in the replica (no flash of the old mesh).
    this.previewHeld = true;
    this.submit([extrudeCommand(x.entity, x.faces, x.distance, x.snap)]);
  }

  private cancelExtrude(): void {
    if (this.extruding) this.session.editPreview(this.extruding.entity, null);
    this.extruding = null;
    this.viewport.modal = false;
    delete this.root.dataset.extruding;
    this.viewport.showPreview(null);
    this.renderEdit();
  }

  private drawBox(from: [number, number], to: [number, number]): void {
    const r = this.canvas.parentElement!.getBoundingClientRect();
    const [x, y] = [Math.min(from[0], to[0]) - r.left, Math.min(from[1], to[1]) - r.top];
    Object.assign(this.boxDiv.style, {
      left: `${x}px`,
      top: `${y}px`,
      width: `${Math.abs(to[0] - from[0])}px`,
      height: `${Math.abs(to[1] - from[1])}px`,
    });
    this.boxDiv.hidden = false;
  }

  /** The box is released: the elements inside are selected (added with Shift). */
  private finishBox(from: [number, number], to: [number, number], additive: boolean): void {
    this.boxing = null;
    this.boxDiv.hidden = true;
    this.viewport.modal = false;
    this.viewport.setOrbit(true);
    delete this.root.dataset.boxing;
    const m = this.editMesh;
    const id = this.selected;
    if (!m || id === null) return;
    const inside = boxSelect(m, this.elementMode, (p) => this.viewport.projectLocal(id, p), {
      x0: from[0],
      y0: from[1],
      x1: to[0],
      y1: to[1],
    });
    this.editSel = additive ? [...new Set([...this.editSel, ...inside])] : inside;
    this.renderEdit();
  }

  /** G: the vertices of the selected elements follow the mouse until a click (Escape cancels). */
  private beginGrab(kind: 'grab' | 'rotate' | 'scale'): void {
    const t = this.editTarget();
    if (!t || this.extruding || this.grabbing) return;
    const indices = selectedVertexIndices(t.mesh, this.editSel);
    if (indices.length === 0) {
      this.toast('Select vertices, edges or faces first (1/2/3, then click).', 'info');
      return;
    }
    const c = [0, 1, 2].map((k) => indices.reduce((s, i) => s + t.mesh.vertices[i].p[k], 0) / indices.length) as Vec3;
    const pivot = this.viewport.projectLocal(t.entity, c) ?? [this.pointer.x, this.pointer.y];
    this.grabbing = {
      kind,
      entity: t.entity,
      indices,
      startX: this.pointer.x,
      startY: this.pointer.y,
      pivot,
      axis: this.viewport.localViewAxis(t.entity),
      command: null,
    };
    this.viewport.editGizmo(null);
    this.viewport.modal = true;
    this.root.dataset.grabbing = 'true';
  }

  private updateGrab(x: number, y: number, snap: boolean): void {
    const g = this.grabbing;
    if (!g || !this.editMesh) return;
    if (g.kind === 'grab') {
      const delta = this.viewport.localDelta(g.entity, x - g.startX, y - g.startY);
      g.command = grabCommand(g.entity, this.editMesh, g.indices, delta, snap ? 0.25 : null);
    } else {
      const [px, py] = g.pivot;
      if (g.kind === 'rotate') {
        // The mouse's turn around the pivot on screen is the turn about the view axis.
        let angle = Math.atan2(y - py, x - px) - Math.atan2(g.startY - py, g.startX - px);
        if (snap) angle = Math.round(angle / (Math.PI / 12)) * (Math.PI / 12);
        g.command = turnOrScaleCommand(g.entity, this.editMesh, g.indices, { angle: -angle, axis: g.axis });
      } else {
        const start = Math.max(Math.hypot(g.startX - px, g.startY - py), 1);
        let factor = Math.hypot(x - px, y - py) / start;
        if (snap) factor = Math.max(0.1, Math.round(factor * 10) / 10);
        g.command = turnOrScaleCommand(g.entity, this.editMesh, g.indices, { factor });
      }
    }
    const conn = this.session.conn;
    if (conn.preview_edit(JSON.stringify(g.command))) {
      this.viewport.showPreview({ positions: conn.preview_positions(), normals: conn.preview_normals(), indices: conn.preview_indices() });
    }
    const now = performance.now();
    if (now - this.lastEditPreviewAt >= 30) {
      this.lastEditPreviewAt = now;
      this.session.editPreview(g.entity, g.command);
    }
  }

  private commitGrab(): void {
    const g = this.grabbing;
    if (!g) return;
    this.grabbing = null;
    this.viewport.modal = false;
    delete this.root.dataset.grabbing;
    this.session.editPreview(g.entity, null);
    if (!g.command) {
      this.viewport.showPreview(null);
      return;
    }
    this.previewHeld = true;
    this.submit([g.command]);
  }

  private cancelGrab(): void {
    if (this.grabbing) this.session.editPreview(this.grabbing.entity, null);
    this.grabbing = null;
    this.viewport.modal = false;
    delete this.root.dataset.grabbing;
    this.viewport.showPreview(null);
    this.renderEdit();
  }

  private subdivide(): void {
    const t = this.editTarget();
    if (!t) return;
    const { faces } = selectedElements(t.mesh, this.editSel);
    if (faces.length === 0) {
      this.toast('Select faces to subdivide.', 'info');
      return;
    }
    this.submit([{ SubdivideFaces: { entity: t.entity, faces, cuts: 1 } }]);
  }

  /** Catmull–Clark of the selected faces, or of the whole mesh when none are selected. */
  private smooth(levels: number): void {
    const t = this.editTarget();
    if (!t) return;
    const { faces } = selectedElements(t.mesh, this.editSel);
    this.submit([{ Smooth: { entity: t.entity, faces, levels } }]);
  }

  private weld(): void {
    const t = this.editTarget();
    if (!t) return;
    const cmd = weldCommand(t.entity, t.mesh, selectedVertexIndices(t.mesh, this.editSel));
    if (!cmd) {
      this.toast('Select two or more vertices to merge.', 'info');
      return;
    }
    this.submit([cmd]);
    this.editSel = [];
  }

  private mirror(): void {
    const t = this.editTarget();
    if (!t) return;
    this.submit([{ Mirror: { entity: t.entity, axis: 'X', weld: true } }]);
  }

  private deleteElements(): void {
    const t = this.editTarget();
    if (!t) return;
    const { vertices, edges, faces } = selectedElements(t.mesh, this.editSel);
    if (vertices.length + edges.length + faces.length === 0) {
      this.toast('Nothing selected to delete.', 'info');
      return;
    }
    this.submit([{ DeleteElements: { entity: t.entity, vertices, edges, faces } }]);
    this.editSel = [];
  }

  /**
   * A new entity id of this user (the protocol's rule, in the wasm package): after every own id
   * seen, and after the counter remembered in this browser (ids stay unique across reloads).
   */
  private newEntityId(): number | null {
    const remembered = Number(localStorage.getItem(this.counterKey) ?? '0');
    const id = this.session.conn.next_entity_id(remembered);
    if (id === undefined) return null;
    localStorage.setItem(this.counterKey, String(entityCounter(id)));
    return id;
  }

  /** Shift+D: a copy of the selected object beside it, selected. */
  private duplicate(): void {
    if (this.mode === 'edit' || this.selected === null || !this.guard() || this.author === null) return;
    const copy = this.newEntityId();
    if (copy === null) return;
    this.submit([
      { Duplicate: { entity: this.selected, copy, offset: [1.5, 0, 0] } },
      { Select: { entities: [copy] } },
    ]);
    this.selected = copy;
    this.adding = copy;
  }

  private setColor(hex: string): void {
    if (this.selected === null || !this.guard()) return;
    this.submit([{ SetColor: { entity: this.selected, rgba: hexToLinear(hex) } }]);
  }

  private commitTransform(id: number, from: Transform, to: Transform): void {
    if (!this.editable()) {
      this.guard();
      this.refresh();
      return;
    }
    const commands = transformCommands(id, from, to);
    if (commands.length === 0) return;
    // The others selected change the same way (one undo step for all).
    const others = this.also.flatMap((o) => {
      const e = this.entity(o);
      if (!e) return [];
      const t = this.shown(e);
      return [{ id: o, to: sameChange(from, to, t), cmds: transformCommands(o, t, sameChange(from, to, t)) }];
    });
    const label = { move: 'Move', rotate: 'Rotate', scale: 'Scale', select: 'Move' }[this.tool];
    const seqs = this.submit([...commands, ...others.flatMap((o) => o.cmds)], label);
    this.hold(id, to, seqs);
    for (const o of others) this.hold(o.id, o.to, seqs);
    this.refresh();
  }

  private inspectorChanged(key: string): void {
    const e = this.entity(this.selected);
    if (!e) return;
    if (!this.guard()) {
      this.renderInspector();
      return;
    }
    const num = (k: string) => Number(this.fields.get(k)?.value ?? '0');
    if (key === 'name') {
      this.submit([{ SetName: { entity: e.id, name: this.fields.get('name')?.value ?? '' } }]);
      return;
    }
    if (key === 'color') {
      this.setColor(this.fields.get('color')?.value ?? '#ffffff');
      return;
    }
    const from = this.shown(e);
    const to: Transform = {
      translation: [num('position.x'), num('position.y'), num('position.z')],
      rotation: quatFromEulerDeg([num('rotation.x'), num('rotation.y'), num('rotation.z')]),
      scale: [num('scale.x'), num('scale.y'), num('scale.z')],
    };
    if (to.scale.some((s) => !(s > 0))) {
      this.toast('Scale must be positive.', 'error');
      this.renderInspector();
      return;
    }
    // Only the edited group changes; the others keep their exact current values.
    const group = key.split('.')[0];
    const target: Transform = {
      translation: group === 'position' ? to.translation : from.translation,
      rotation: group === 'rotation' ? to.rotation : from.rotation,
      scale: group === 'scale' ? to.scale : from.scale,
    };
    // A typed value is absolute: SetTransform (last write wins), not a delta that would add to
    // a concurrent nudge.
    this.hold(e.id, target, this.submit([{ SetTransform: { entity: e.id, transform: target } }]));
    this.refresh();
  }

  private sendPresence(point: Vec3 | null): void {
    this.lastPoint = point;
    if (this.connection !== 'live') return;
    this.lastPresence = performance.now();
    const cam = this.viewport.cameraPose();
    this.session.presence(point, cam.position, cam.rotation);
    this.updateInterest();
  }

  /** The region others' presence is wanted in follows the view. */
  private updateInterest(): void {
    const { center, halfExtent } = this.viewport.viewRegion();
    this.session.followInterest(center, halfExtent);
  }

  // ------------------------------------------------------------------------------- rendering

  private entity(id: number | null): EntityView | undefined {
    return id === null ? undefined : this.view.entities.find((e) => e.id === id);
  }

  /** What is shown for an entity: this user's held drag, another's live one, else the replica. */
  private shown(e: EntityView): Transform {
    const committed = { translation: e.translation, rotation: e.rotation, scale: e.scale };
    return this.held.get(e.id) ?? this.liveTransforms.get(e.id)?.transform ?? committed;
  }

  /** A released drag of `id` to `to`, its entries `seqs` submitted: shown until the server spoke. */
  private hold(id: number, to: Transform, seqs: number[]): void {
    if (seqs.length === 0) return;
    this.session.conn.hold(id, JSON.stringify(to), new Float64Array(seqs));
    this.readPreviews();
  }

  /** A drag step: others see it at once (at most one preview per 30 ms). */
  private dragMoved(id: number, to: Transform): void {
    const now = performance.now();
    if (!this.editable() || now - this.lastPreviewAt < 30) return;
    this.lastPreviewAt = now;
    this.session.preview(id, to);
  }

  /** Draws the current view again (previews moved) without re-reading the replica. */
  private redraw(): void {
    if (!this.synced) return;
    const present = presentPeople(this.people, Date.now());
    const view = { ...this.view, selections: shownSelections(this.view.selections, present, this.author) };
    this.viewport.sync(view, (e) => this.shown(e), this.author, this.selected);
    this.renderOutliner();
  }

  /** Milliseconds the last replica change took to reach the view (script time, for benches). */
  private refreshTimes: number[] = [];
  /** An entity this user just added or duplicated and selected, until the replica has it. */
  private adding: number | null = null;

  private refresh(): void {
    if (!this.synced) return;
    const t0 = performance.now();
    this.refreshView();
    this.refreshTimes.push(performance.now() - t0);
    if (this.refreshTimes.length > 256) this.refreshTimes.shift();
  }

  private refreshView(): void {
    // Only what changed is read from the replica (a whole-scene read after a snapshot).
    const changes = this.session.changes();
    if (changes.all) {
      this.view = this.session.scene();
    } else if (changes.entities.length > 0 || this.view.position === 0) {
      const byId = new Map(this.view.entities.map((e) => [e.id, e]));
      for (const id of changes.entities) {
        const e = this.session.entity(id);
        if (e) byId.set(id, e);
        else byId.delete(id);
      }
      this.view = { ...this.session.sceneMeta(), entities: [...byId.values()].sort((a, b) => a.id - b.id) };
    } else {
      this.view = { ...this.session.sceneMeta(), entities: this.view.entities };
    }
    // A selection goes when its entity does, but not one just added (its spawn is on the way).
    if (this.selected !== null && this.entity(this.selected)) this.adding = null;
    if (this.selected !== null && !this.entity(this.selected) && this.selected !== this.adding) this.selected = null;
    this.also = this.also.filter((id) => this.entity(id));
    const present = presentPeople(this.people, Date.now());
    const view = { ...this.view, selections: shownSelections(this.view.selections, present, this.author) };
    this.viewport.sync(view, (e) => this.shown(e), this.author, this.selected);
    this.renderOutliner();
    this.renderInspector();
  }

  private applyRole(): void {
    const reason = readOnlyReason(this.role, this.roleSetByAdmin);
    const viewer = this.role === 'viewer';
    this.banner.hidden = !viewer;
    if (viewer && reason) this.banner.textContent = reason;
    for (const b of this.editButtons) {
      b.disabled = viewer;
      if (viewer && reason) b.title = reason;
    }
    for (const [tool, b] of this.toolButtons) {
      if (tool !== 'select') {
        b.disabled = viewer;
        if (viewer && reason) b.title = reason;
      }
    }
    this.root.classList.toggle('read-only', viewer);
    this.renderInspector();
    this.renderTools();
  }

  private renderTools(): void {
    for (const [tool, b] of this.toolButtons) b.setAttribute('aria-pressed', String(tool === this.tool));
    this.viewport?.setTool(this.tool, canEdit(this.role));
    if (this.mode === 'edit') this.renderEdit();
  }

  private renderStatus(): void {
    const kind = this.session.transport?.kind;
    const transport = kind === 'webrtc' ? 'WebRTC' : kind === 'websocket' ? 'WebSocket' : '—';
    const label: Record<string, string> = {
      connecting: 'Connecting…',
      joining: 'Joining…',
      joined: 'Loading scene…',
      live: 'Connected',
      resyncing: 'Resyncing…',
      refused: 'Refused',
      closed: 'Disconnected',
      offline: 'Offline',
      reconnecting: 'Offline, reconnecting…',
    };
    // Edits not yet acknowledged (made offline included) show as pending.
    const pending = this.session.pending();
    const waiting = pending > 0 ? ` · ${pending} pending` : '';
    this.status.textContent = `${label[this.connection] ?? this.connection} · ${transport}${waiting}`;
    this.status.dataset.pending = String(pending);
    this.status.dataset.state = this.connection;
    this.status.dataset.transport = kind ?? '';
    const role = this.role ? ` · ${this.role}` : '';
    const name = this.view.name ? `${this.view.name} — ` : '';
    this.sessionLabel.textContent = `${name}Session ${this.session.sessionId.slice(0, 8)}${role}`;
  }

  /** An admin changed this member's role since it joined (the reason shown when read-only). */
  private roleSetByAdmin = false;

  /** What the people list shows, to redraw it only when that changes (a role menu being used
   *  must not be replaced under the pointer). */
  private peopleShown = '';

  private renderPeople(): void {
    const now = Date.now();
    const present = presentPeople(this.people, now).filter((p) => p.author !== this.author);
    const roles = new Map(this.session.sceneMeta().members.map((m) => [m.author, m.role as Role]));
    const rows: [number, string, Role | undefined][] = present.map((p) => [
      p.author,
      authorLabel(p.author, this.author, this.view.names),
      roles.get(p.author),
    ]);
    const shown = JSON.stringify([this.author, this.role, this.myName, rows]);
    if (shown === this.peopleShown) return;
    this.peopleShown = shown;
    const items: HTMLLIElement[] = [];
    if (this.author !== null) {
      items.push(this.personItem(this.author, `You (${this.role ?? '…'})`));
    }
    for (const [author, label, role] of rows) items.push(this.personItem(author, label, role));
    this.peopleList.replaceChildren(...items);
  }

  private personItem(author: number, label: string, role?: Role): HTMLLIElement {
    const dot = h('span', { class: 'dot', 'aria-hidden': 'true' });
    dot.style.background = authorColor(author);
    if (author !== this.author) {
      if (this.role !== 'admin' || role === undefined) return h('li', { 'data-author': String(author) }, dot, label);
      // An admin sets others' roles and removes members: signed entries like any edit.
      const menu = h('select', { 'aria-label': `Role of ${label}`, 'data-testid': `role-${author}` },
        ...(['viewer', 'editor', 'admin'] as const).map((r) => h('option', { value: r }, r)));
      menu.value = role;
      menu.addEventListener('change', () => {
        this.submit([{ SetRole: { author, role: menu.value } }]);
      });
      const remove = h('button', { type: 'button', class: 'link', title: `Remove ${label} from the session (they may rejoin with their invite)`, 'data-testid': `kick-${author}` }, 'Remove');
      remove.addEventListener('click', () => {
        this.submit([{ Kick: { author, reason: '', revoke_invite: false } }]);
      });
      const ban = h('button', { type: 'button', class: 'link', title: `Remove ${label} and revoke the invite they joined with (others who joined with it cannot rejoin either)`, 'data-testid': `ban-${author}` }, 'Remove + revoke invite');
      ban.addEventListener('click', () => {
        this.submit([{ Kick: { author, reason: '', revoke_invite: true } }]);
      });
      return h('li', { 'data-author': String(author) }, dot, label, ' ', menu, ' ', remove, ' ', ban);
    }
    // One's own entry: the name one goes by, and a way to change it.
    const mine = this.myName ? `${this.myName} (you, ${this.role ?? '…'})` : label;
    const rename = h('button', { type: 'button', class: 'link', title: 'Change the name others see', 'data-testid': 'rename' }, 'Rename');
    rename.addEventListener('click', () => this.askName());
    return h('li', { 'data-author': String(author) }, dot, mine, ' ', rename);
  }

  /** First visit (no stored name) or Rename: a small form under the top bar. */
  private askName(): void {
    this.nameInput.value = this.myName ?? '';
    this.nameForm.hidden = false;
    this.nameInput.focus();
  }

  private async saveName(typed: string): Promise<void> {
    const name = cleanDisplayName(typed);
    if (!name) return;
    this.myName = name;
    this.nameForm.hidden = true;
    await storeDisplayName(name).catch(() => undefined);
    this.announceName();
    this.renderPeople();
  }

  /** Tells the others the name this identity goes by, unless the scene already shows it. A
   *  signed entry like any edit: no one else can rename this author. */
  private announceName(): void {
    if (!this.myName || !this.synced || this.author === null) return;
    if (this.view.names[String(this.author)] === this.myName) return;
    this.submit([{ SetDisplayName: { name: this.myName } }]);
  }

  private renderOutliner(): void {
    const items = this.view.entities.map((e) => {
      const on = e.id === this.selected || this.also.includes(e.id);
      const b = h('button', { type: 'button', 'aria-pressed': String(on), 'data-entity': String(e.id) });
      const dot = h('span', { class: 'dot', 'aria-hidden': 'true' });
      dot.style.background = linearToHex(e.color);
      const t = this.shown(e).translation.map((v) => v.toFixed(2)).join(', ');
      b.append(dot, displayName(e), h('span', { class: 'where' }, ` (${t})`));
      b.dataset.translation = this.shown(e).translation.map((v) => v.toFixed(3)).join(',');
      const owner = entityAuthor(e.id);
      b.title = `Created by author ${owner}`;
      b.addEventListener('click', (ev) => this.select(e.id, ev.shiftKey));
      return h('li', {}, b);
    });
    if (items.length === 0) items.push(h('li', { class: 'empty' }, 'Empty scene: add a primitive.'));
    this.outliner.replaceChildren(...items);
  }

  private renderInspector(): void {
    const e = this.entity(this.selected);
    const editable = canEdit(this.role);
    for (const [key, input] of this.fields) {
      if (key === 'palette-color') continue;
      input.disabled = !e;
      input.readOnly = !editable;
      if (!e) input.value = '';
    }
    if (!e) return;
    const t = this.shown(e);
    const set = (k: string, v: number) => {
      const input = this.fields.get(k);
      if (input && document.activeElement !== input) input.value = String(Math.round(v * 1000) / 1000);
    };
    const nameField = this.fields.get('name');
    if (nameField && document.activeElement !== nameField) nameField.value = e.name;
    ['x', 'y', 'z'].forEach((a, i) => {
      set(`position.${a}`, t.translation[i]);
      set(`rotation.${a}`, eulerDegFromQuat(t.rotation)[i]);
      set(`scale.${a}`, t.scale[i]);
    });
    const color = this.fields.get('color');
    if (color) color.value = linearToHex(e.color);
    if (!editable) for (const input of this.fields.values()) input.disabled = true;
  }

  private renderTelemetry(): void {
    const now = performance.now();
    const t = this.telemetry;
    const frames = this.viewport.frameTimes.slice(-60);
    const frame = frames.length ? frames.reduce((a, b) => a + b, 0) / frames.length : 0;
    const rows: [string, string][] = [
      ['Transport', this.session.transport?.kind ?? '—'],
      ['Renderer', this.viewport.backend],
      ['RTT', t.rttMs === null ? '—' : `${t.rttMs.toFixed(1)} ms`],
      ['Commands/s', String(perSecond(t.submitted, now))],
      ['Bytes/s in', String(bytesPerSecond(t.bytesIn, now))],
      ['Bytes/s out', String(bytesPerSecond(t.bytesOut, now))],
      ['Refusals', String(t.refusals)],
      ['Conflicts', String(t.conflicts)],
      ['Resyncs', t.lastResync === null ? '0' : `${t.resyncs} (last: ${t.lastResync})`],
      ['Frame', `${frame.toFixed(1)} ms`],
      ['Resolution', `${Math.round(this.viewport.resolutionScale * 100)} %${this.viewport.antialias ? ', MSAA' : ''}`],
      ['Entities', String(this.view.entities.length)],
    ];
    this.overlay.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  private toast(text: string, kind: 'info' | 'error'): void {
    const el = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
    this.toasts.append(el);
    window.setTimeout(() => el.remove(), 6000);
    while (this.toasts.children.length > 4) this.toasts.firstElementChild?.remove();
  }

  /** For tests and benchmarks: read-only views plus a bulk spawn. */
  private debugHandle() {
    return {
      state: () => ({
        connection: this.connection,
        transport: this.session.transport?.kind ?? null,
        role: this.role,
        author: this.author,
        entities: this.view.entities.length,
        position: this.view.position,
        hash: this.session.conn.state_hash(),
        backend: this.viewport.backend,
        resolutionScale: this.viewport.resolutionScale,
        previews: this.held.size,
        /** Own commands refused so far, and how many of them as conflicts. */
        refusals: this.telemetry.refusals,
        conflicts: this.telemetry.conflicts,
      }),
      frameTimes: () => [...this.viewport.frameTimes],
      framesRendered: () => this.viewport.framesRendered,
      /** Script milliseconds of each recent replica change, reading it to updating the view. */
      refreshTimes: () => [...this.refreshTimes],
      /** Cuts the network path as a dropped socket does (the reconnect test): the transport
       *  closes without a goodbye and the session reconnects by itself. */
      dropConnection: () => this.session.cut('the connection was cut'),
      /** Unacknowledged entries in the last state kept for a reload (IndexedDB). */
      keptPending: () => this.session.keptPending,
      /** Submits raw commands (benchmarks and tests that script the protocol). */
      submit: (commands: Command[]) => this.submit(commands),
      /** The editable mesh of an entity (ids and positions), as edit mode reads it. */
      editMesh: (id: number) => JSON.parse(this.session.conn.edit_mesh_json(id)) as EditMeshView,
      /** Edit mode: the mode, the selected element keys, and where a face's centre shows. */
      edit: () => ({
        mode: this.mode,
        elementMode: this.elementMode,
        selection: [...this.editSel],
        extruding: this.extruding !== null,
        grabbing: this.grabbing !== null,
      }),
      /** Where vertex `index` of the edited mesh shows, and where its lowest vertex is. */
      vertexAt: (index: number) => {
        const m = this.editMesh;
        if (!m || this.selected === null || !m.vertices[index]) return null;
        return this.viewport.projectLocal(this.selected, m.vertices[index].p);
      },
      lowestVertex: () => {
        const m = this.editMesh;
        if (!m) return -1;
        let best = -1;
        m.vertices.forEach((v, i) => {
          if (best < 0 || v.p[1] < m.vertices[best].p[1] || (v.p[1] === m.vertices[best].p[1] && v.p[0] + v.p[2] > m.vertices[best].p[0] + m.vertices[best].p[2])) best = i;
        });
        return best;
      },
      faceCentre: (index: number) => {
        const m = this.editMesh;
        const f = m?.faces[index];
        if (!m || !f || this.selected === null) return null;
        const c = [0, 1, 2].map((k) => f.corners.reduce((s, i) => s + m.vertices[i].p[k], 0) / f.corners.length) as Vec3;
        return this.viewport.projectLocal(this.selected, c);
      },
      /** Edit mode: where the gizmo's X handle is (for tests that drag it like a user). */
      editGizmoAxis: (axis: 'x' | 'y' | 'z') => this.viewport.gizmoAxis(axis),
      /** Other people's cursors as drawn: author and position (`null` while hidden). */
      markers: () => this.viewport.markerList(),
      /** Object selection outlines as drawn: [selector, entity]. */
      outlines: () => this.viewport.outlineList(),
      /** Others' element selections shown: [author, entity, drawn parts]. */
      remoteSelections: () => this.viewport.remoteSelectionList(),
      /** Entities showing another member's mesh-edit preview. */
      remoteEdits: () => this.viewport.remoteEditIds(),
      /** The index of the face whose centre is highest (the top of a box). */
      topFace: () => {
        const m = this.editMesh;
        if (!m) return -1;
        let best = -1;
        let bestY = -Infinity;
        m.faces.forEach((f, i) => {
          const y = f.corners.reduce((s, c) => s + m.vertices[c].p[1], 0) / f.corners.length;
          if (y > bestY) [best, bestY] = [i, y];
        });
        return best;
      },
      /** Render every frame (benchmarks) instead of on change. */
      continuous: (on: boolean) => {
        this.viewport.continuous = on;
        this.viewport.frameTimes.length = 0;
      },
      triangles: () => this.viewport.triangles(),
      gizmoAxis: (axis: 'x' | 'y' | 'z') => this.viewport.gizmoAxis(axis),
      project: (p: Vec3) => this.viewport.project(p),
      /** `n` entities on a grid: the first `spheres` are spheres (224 triangles), the rest cubes. */
      spawnGrid: (n: number, spheres: number) => {
        if (this.author === null) return;
        const first = this.newEntityId();
        if (first === null) return;
        const base = entityCounter(first) - 1;
        localStorage.setItem(this.counterKey, String(base + n));
        const side = Math.ceil(Math.sqrt(n));
        for (let i = 0; i < n; i += 64) {
          const batch: Command[] = [];
          for (let k = i; k < Math.min(n, i + 64); k += 1) {
            const x = (k % side) - side / 2;
            const z = Math.floor(k / side) - side / 2;
            batch.push({
              Spawn: {
                entity: this.author * 2 ** 32 + base + k,
                primitive: k < spheres ? 'Sphere' : 'Cube',
                transform: { translation: [x * 1.5, 0.5, z * 1.5], rotation: [0, 0, 0, 1], scale: [0.5, 0.5, 0.5] },
              },
            });
          }
          this.submit(batch);
        }
      },
    };
  }
}
