// The 3D view: three.js's WebGPURenderer (WebGPU; it falls back to WebGL2 by itself where
// WebGPU is missing), meshes from the replica, selection outlines in each selector's color,
// other people's cursors and cameras, and a TransformControls gizmo whose drags show at once.

import * as THREE from 'three/webgpu';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { TransformControls } from 'three/addons/controls/TransformControls.js';
import type { EntityView, Person, SceneView, Tool, Transform, Vec3 } from './state';
import { authorColor } from './state';
import { playout } from '../pkg/meshwork_wasm.js';

export interface MeshSource {
  positions(id: number): Float32Array;
  normals(id: number): Float32Array;
  indices(id: number): Uint32Array;
  /**
   * How long others' markers take to reach an update: the server's presence tick, as the
   * connection has it (`presence_tick_ms`: the `Welcome`'s, the protocol's default before one).
   */
  presenceTickMs(): number;
}

/** All entities sharing one geometry: one instanced draw. */
interface Batch {
  mesh: THREE.InstancedMesh;
  geometry: THREE.BufferGeometry;
  ids: number[]; // instance index → entity
}

interface Slot {
  batch: string;
  index: number;
  geometry: string;
  transform: Transform;
}

const MATRIX = new THREE.Matrix4();
const COLOR = new THREE.Color();
const ZERO = new THREE.Vector3(0, 0, 0);
/** Selected elements in edit mode (Blender's orange). */
const LIT = 0xff9a2e;

/** The editable mesh of the entity in edit mode, drawn instead of its instance. */
interface EditView {
  id: number;
  group: THREE.Group;
  mesh: THREE.Mesh;
  /** Triangle → face index (the edit triangulation). */
  faces: number[];
  wire: THREE.LineSegments;
  lit: THREE.Mesh;
  litEdges: THREE.LineSegments;
  dots: THREE.InstancedMesh;
  preview: THREE.Mesh | null;
}

/** Selected elements to light, in entity space. */
export interface EditLit {
  /** Face indices (of the edit mesh's faces). */
  faces: number[];
  /** Vertex positions, all of them (drawn as dots in vertex mode). */
  vertices: Vec3[];
  /** Which of `vertices` are selected. */
  selectedVertices: number[];
  /** Selected edges as position pairs. */
  edges: [Vec3, Vec3][];
  /** Show every vertex as a dot (vertex mode). */
  dots: boolean;
}

/**
 * A marker part on its way from where it was drawn to its latest update, by the protocol's rule
 * (`playout`, the headset's too): `[x, y, z, qx, qy, qz, qw]` before and after, and when.
 */
interface Ease {
  from: Float32Array;
  to: Float32Array;
  since: number;
}

/** Starts `part` toward a new pose; one that was hidden appears there at once. */
function moveMarker(
  part: THREE.Object3D,
  position: THREE.Vector3,
  rotation: THREE.Quaternion | null,
  now: number,
): void {
  if (!part.visible) {
    part.position.copy(position);
    if (rotation) part.quaternion.copy(rotation);
    delete part.userData.ease;
    return;
  }
  const q = rotation ?? part.quaternion;
  const ease: Ease = {
    from: Float32Array.of(...part.position.toArray(), ...part.quaternion.toArray()),
    to: Float32Array.of(...position.toArray(), q.x, q.y, q.z, q.w),
    since: now,
  };
  part.userData.ease = ease;
}

export class Viewport {
  renderer!: THREE.WebGPURenderer;
  /** Multisampling, off on software adapters (SwiftShader) where it costs more than it shows. */
  antialias = true;
  readonly scene = new THREE.Scene();
  readonly camera: THREE.PerspectiveCamera;
  private orbit: OrbitControls;
  private gizmo: TransformControls;
  /** Entities are instances: one draw per distinct geometry, whatever the entity count. */
  private batches = new Map<string, Batch>();
  private slots = new Map<number, Slot>();
  private material = new THREE.MeshStandardNodeMaterial({ roughness: 0.55, metalness: 0.05 });
  /** What the gizmo moves: stands in for the selected entity's instance. */
  private proxy = new THREE.Object3D();
  private outlines = new Map<string, THREE.Box3Helper>();
  private markers = new Map<number, THREE.Group>();
  private dragStart: Transform | null = null;
  private raycaster = new THREE.Raycaster();
  private ground = new THREE.Plane(new THREE.Vector3(0, 1, 0), 0);
  /** Milliseconds between the last frames (ring), for telemetry and benchmarks. */
  readonly frameTimes: number[] = [];
  /** Frames rendered so far. */
  framesRendered = 0;
  private lastFrame = 0;
  /** Render only when something changed (a still scene costs nothing); `continuous` for benchmarks. */
  private dirty = true;
  continuous = false;
  backend = 'starting';
  /**
   * Render resolution relative to the canvas: lowered in steps while frames take longer than
   * ~45 ms (a software rasterizer, a weak GPU, a huge scene) and raised again when there is
   * headroom, so the editor stays responsive.
   */
  resolutionScale = 1;
  private resize: () => void = () => {};

  /** A gizmo drag ended: the entity's transform before and after. */
  onDragEnd: (id: number, from: Transform, to: Transform) => void = () => {};
  /** Every change during a gizmo drag (for live previews to others). */
  onDragMove: (id: number, to: Transform) => void = () => {};
  /** A click picked an entity (or empty space: `null`); `additive` with Shift held. */
  onPick: (id: number | null, additive: boolean) => void = () => {};
  /** The pointer moved over the scene (hit point in scene space). */
  onHover: (point: Vec3 | null) => void = () => {};
  /** Edit mode: a click on the edited mesh (face index, entity-space point), or off it. */
  onEditPick: (face: number | null, local: Vec3 | null, additive: boolean) => void = () => {};
  /** While true (a modal gesture such as an extrude), clicks pick nothing. */
  modal = false;
  private edit: EditView | null = null;
  /** What the gizmo moves in edit mode: stands at the selected elements' centre. */
  private editProxy = new THREE.Object3D();
  private editDragStart: THREE.Matrix4 | null = null;
  /**
   * Edit mode: the gizmo on the selected elements moved (`done` when released); `moved` maps a
   * point of the entity (its own space) to where the drag so far takes it.
   */
  onEditGizmo: (moved: (p: Vec3) => Vec3, done: boolean) => void = () => {};
  /** Others' element selections, by author: a group placed on its entity. */
  private remoteSelections = new Map<number, THREE.Group>();
  /** Others' mesh-edit previews, drawn instead of the entity's instance. */
  private remoteEdits = new Map<number, THREE.Mesh>();

  constructor(private canvas: HTMLCanvasElement, private meshes: MeshSource) {
    this.camera = new THREE.PerspectiveCamera(55, 1, 0.05, 500);
    this.camera.position.set(4, 3.5, 6);
    this.scene.background = new THREE.Color(0x1d2027);
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x30343c, 1.6));
    const sun = new THREE.DirectionalLight(0xffffff, 2.2);
    sun.position.set(5, 10, 7);
    this.scene.add(sun);
    const grid = new THREE.GridHelper(40, 40, 0x4a505c, 0x30343c);
    this.scene.add(grid);
    this.orbit = new OrbitControls(this.camera, canvas);
    this.orbit.target.set(0, 0.5, 0);
    this.orbit.update();
    this.orbit.addEventListener('change', () => this.invalidate());
    this.gizmo = new TransformControls(this.camera, canvas);
    this.gizmo.setSize(0.9);
    this.scene.add(this.gizmo.getHelper());
    this.gizmo.addEventListener('change', () => this.invalidate());
    this.scene.add(this.proxy);
    // Live preview: the instance follows the proxy while it is dragged.
    this.gizmo.addEventListener('objectChange', () => {
      if (this.gizmo.object === this.editProxy) {
        if (this.editDragStart) this.onEditGizmo(this.editMover(), false);
        return;
      }
      const id = this.proxy.userData.entity as number | undefined;
      if (id !== undefined) {
        const t = transformOf(this.proxy);
        this.place(id, t);
        if (this.dragStart) this.onDragMove(id, t);
      }
    });
    this.gizmo.addEventListener('dragging-changed', (e) => {
      const dragging = (e as unknown as { value: boolean }).value;
      this.orbit.enabled = !dragging;
      const obj = this.gizmo.object;
      if (!obj) return;
      if (obj === this.editProxy) {
        if (dragging) {
          this.editDragStart = this.editProxy.matrixWorld.clone();
        } else if (this.editDragStart) {
          this.onEditGizmo(this.editMover(), true);
          this.editDragStart = null;
        }
        return;
      }
      if (dragging) {
        this.dragStart = transformOf(obj);
      } else if (this.dragStart) {
        const id = obj.userData.entity as number;
        this.onDragEnd(id, this.dragStart, transformOf(obj));
        this.dragStart = null;
      }
    });
    this.installPointer();
  }

  async start(): Promise<void> {
    const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<{ info?: { isFallbackAdapter?: boolean } } | null> } }).gpu;
    const adapter = await gpu?.requestAdapter().catch(() => null);
    const software = adapter?.info?.isFallbackAdapter === true;
    const param = new URLSearchParams(location.search).get('aa');
    this.antialias = param === null ? !software : param !== '0';
    this.renderer = new THREE.WebGPURenderer({ canvas: this.canvas, antialias: this.antialias });
    await this.renderer.init();
    const backend = (this.renderer as unknown as { backend: { isWebGPUBackend?: boolean } }).backend;
    this.backend = backend.isWebGPUBackend ? 'WebGPU' : 'WebGL2';
    const resize = () => {
      const w = this.canvas.clientWidth || 1;
      const h = this.canvas.clientHeight || 1;
      this.renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2) * this.resolutionScale);
      this.renderer.setSize(w, h, false);
      this.camera.aspect = w / h;
      this.camera.updateProjectionMatrix();
      this.invalidate();
    };
    this.resize = resize;
    new ResizeObserver(resize).observe(this.canvas);
    resize();
    await this.renderer.setAnimationLoop((t: number) => {
      if (!this.dirty && !this.continuous) {
        this.lastFrame = 0;
        return;
      }
      this.dirty = false;
      if (this.lastFrame > 0) {
        this.frameTimes.push(t - this.lastFrame);
        if (this.frameTimes.length > 600) this.frameTimes.shift();
        this.adapt();
      }
      this.lastFrame = t;
      // Others' markers still on their way to their latest update: another frame after this.
      if (this.easeMarkers(performance.now())) this.dirty = true;
      this.renderer.render(this.scene, this.camera);
      this.framesRendered += 1;
    });
  }

  /** Triangles in the view's meshes. */
  triangles(): number {
    let n = 0;
    for (const b of this.batches.values()) n += (b.ids.length * (b.geometry.index?.count ?? 0)) / 3;
    return n;
  }

  private sinceAdapt = 0;

  private adapt(): void {
    this.sinceAdapt += 1;
    if (this.sinceAdapt < 20) return;
    this.sinceAdapt = 0;
    const recent = this.frameTimes.slice(-20).sort((a, b) => a - b)[10];
    const before = this.resolutionScale;
    if (recent > 45) this.resolutionScale = Math.max(0.5, this.resolutionScale - 0.25);
    else if (recent < 20) this.resolutionScale = Math.min(1, this.resolutionScale + 0.25);
    if (this.resolutionScale !== before) this.resize();
  }

  /** Schedules a frame. */
  invalidate(): void {
    this.dirty = true;
  }

  /** Whether a gizmo drag is in progress on `id`. */
  dragging(id: number): boolean {
    return this.dragStart !== null && this.proxy.userData.entity === id;
  }

  /** Camera orbiting on or off (off while a box is dragged). */
  setOrbit(on: boolean): void {
    this.orbit.enabled = on;
  }

  /** Gizmo snapping: translation in `step` metres, rotation in 15° steps, scale in tenths. */
  setSnap(step: number | null): void {
    this.gizmo.setTranslationSnap(step);
    this.gizmo.setRotationSnap(step === null ? null : THREE.MathUtils.degToRad(15));
    this.gizmo.setScaleSnap(step === null ? null : 0.1);
  }

  setTool(tool: Tool, editable: boolean): void {
    if (tool === 'select' || !editable) {
      this.gizmo.enabled = false;
      this.gizmo.getHelper().visible = false;
      return;
    }
    this.gizmo.enabled = true;
    this.gizmo.getHelper().visible = this.gizmo.object !== undefined;
    this.gizmo.setMode(tool === 'move' ? 'translate' : tool);
  }

  /** Brings the view in line with the replica (plus local previews). */
  sync(
    view: SceneView,
    transformFor: (e: EntityView) => Transform,
    myAuthor: number | null,
    selected: number | null,
  ): void {
    const seen = new Set<number>();
    for (const e of view.entities) {
      seen.add(e.id);
      const slot = this.slots.get(e.id);
      if (!slot || slot.geometry !== e.geometry) {
        if (slot) this.removeInstance(e.id);
        this.addInstance(e);
      }
      const batch = this.batches.get(this.slots.get(e.id)!.batch)!;
      batch.mesh.setColorAt(this.slots.get(e.id)!.index, COLOR.setRGB(e.color[0], e.color[1], e.color[2], THREE.LinearSRGBColorSpace));
      if (batch.mesh.instanceColor) batch.mesh.instanceColor.needsUpdate = true;
      if (!this.dragging(e.id)) this.place(e.id, transformFor(e));
    }
    for (const id of [...this.slots.keys()]) if (!seen.has(id)) this.removeInstance(id);

    // Outlines: one per (selector, entity), in the selector's color.
    const wanted = new Map<string, [number, number]>();
    for (const s of view.selections) {
      for (const id of s.entities) wanted.set(`${s.author}:${id}`, [s.author, id]);
    }
    if (selected !== null && myAuthor !== null) wanted.set(`${myAuthor}:${selected}`, [myAuthor, selected]);
    for (const [key, helper] of this.outlines) {
      const w = wanted.get(key);
      if (!w || !this.slots.has(w[1])) {
        this.scene.remove(helper);
        helper.dispose();
        this.outlines.delete(key);
      }
    }
    for (const [key, [author, id]] of wanted) {
      if (!this.slots.has(id) || this.outlines.has(key)) continue;
      const helper = new THREE.Box3Helper(new THREE.Box3(), new THREE.Color(authorColor(author)));
      helper.userData.entity = id;
      this.outlines.set(key, helper);
      this.scene.add(helper);
    }
    this.updateOutlines();

    // In edit mode the gizmo is on the selected elements (`editGizmo`), not the object.
    if (this.edit) {
      this.invalidate();
      return;
    }
    // The gizmo follows this user's selection, through the proxy.
    const slot = selected !== null ? this.slots.get(selected) : undefined;
    if (slot && selected !== null) {
      if (!this.dragging(selected)) {
        this.proxy.userData.entity = selected;
        applyTransform(this.proxy, slot.transform);
      }
      if (this.gizmo.object !== this.proxy) this.gizmo.attach(this.proxy);
    } else {
      delete this.proxy.userData.entity;
      if (this.gizmo.object) this.gizmo.detach();
    }
    this.gizmo.getHelper().visible = this.gizmo.enabled && slot !== undefined;
    this.invalidate();
  }

  /** Writes an entity's transform into its instance (and its outlines). */
  private place(id: number, t: Transform): void {
    const slot = this.slots.get(id);
    if (!slot) return;
    slot.transform = t;
    const batch = this.batches.get(slot.batch)!;
    const remote = this.remoteEdits.get(id);
    if (remote) applyTransform(remote, t);
    for (const g of this.remoteSelections.values()) if (g.userData.entity === id) applyTransform(g, t);
    const editing = this.edit?.id === id || remote !== undefined;
    if (this.edit?.id === id) applyTransform(this.edit.group, t);
    MATRIX.compose(new THREE.Vector3(...t.translation), new THREE.Quaternion(...t.rotation), editing ? ZERO : new THREE.Vector3(...t.scale));
    batch.mesh.setMatrixAt(slot.index, MATRIX);
    batch.mesh.instanceMatrix.needsUpdate = true;
    batch.mesh.boundingSphere = null; // recomputed for raycasts
    this.updateOutlines(id);
    this.invalidate();
  }

  private updateOutlines(only?: number): void {
    for (const helper of this.outlines.values()) {
      const id = helper.userData.entity as number;
      if (only !== undefined && id !== only) continue;
      const slot = this.slots.get(id);
      if (!slot) continue;
      const batch = this.batches.get(slot.batch)!;
      if (!batch.geometry.boundingBox) batch.geometry.computeBoundingBox();
      const t = slot.transform;
      MATRIX.compose(new THREE.Vector3(...t.translation), new THREE.Quaternion(...t.rotation), new THREE.Vector3(...t.scale));
      helper.box.copy(batch.geometry.boundingBox!).applyMatrix4(MATRIX);
    }
  }

  private addInstance(e: EntityView): void {
    // Primitives share a batch per kind; an edited mesh gets its own.
    const key = e.kind === 'mesh' ? `${e.id}:${e.geometry}` : e.geometry;
    let batch = this.batches.get(key);
    if (!batch) {
      const geometry = new THREE.BufferGeometry();
      geometry.setAttribute('position', new THREE.BufferAttribute(this.meshes.positions(e.id), 3));
      geometry.setAttribute('normal', new THREE.BufferAttribute(this.meshes.normals(e.id), 3));
      geometry.setIndex(new THREE.BufferAttribute(this.meshes.indices(e.id), 1));
      geometry.computeBoundingSphere();
      geometry.computeBoundingBox();
      batch = { mesh: this.instanced(geometry, 16), geometry, ids: [] };
      this.batches.set(key, batch);
    }
    if (batch.ids.length >= batch.mesh.instanceMatrix.count) this.grow(batch);
    const index = batch.ids.length;
    batch.ids.push(e.id);
    batch.mesh.count = batch.ids.length;
    this.slots.set(e.id, { batch: key, index, geometry: e.geometry, transform: { translation: e.translation, rotation: e.rotation, scale: e.scale } });
  }

  private instanced(geometry: THREE.BufferGeometry, capacity: number): THREE.InstancedMesh {
    const mesh = new THREE.InstancedMesh(geometry, this.material, capacity);
    mesh.count = 0;
    mesh.frustumCulled = false; // instance bounds change with every move
    mesh.setColorAt(0, COLOR.setRGB(1, 1, 1));
    this.scene.add(mesh);
    return mesh;
  }

  /** Doubles a batch's capacity (copying its instances). */
  private grow(batch: Batch): void {
    const old = batch.mesh;
    const mesh = this.instanced(batch.geometry, old.instanceMatrix.count * 2);
    for (let i = 0; i < batch.ids.length; i += 1) {
      old.getMatrixAt(i, MATRIX);
      mesh.setMatrixAt(i, MATRIX);
      old.getColorAt(i, COLOR);
      mesh.setColorAt(i, COLOR);
    }
    mesh.count = batch.ids.length;
    this.scene.remove(old);
    old.dispose();
    batch.mesh = mesh;
  }

  /** Removes an instance: the batch's last instance takes its place. */
  private removeInstance(id: number): void {
    const slot = this.slots.get(id);
    if (!slot) return;
    this.slots.delete(id);
    const batch = this.batches.get(slot.batch)!;
    const last = batch.ids.length - 1;
    if (slot.index !== last) {
      const moved = batch.ids[last];
      batch.mesh.getMatrixAt(last, MATRIX);
      batch.mesh.setMatrixAt(slot.index, MATRIX);
      batch.mesh.getColorAt(last, COLOR);
      batch.mesh.setColorAt(slot.index, COLOR);
      batch.ids[slot.index] = moved;
      this.slots.get(moved)!.index = slot.index;
    }
    batch.ids.pop();
    batch.mesh.count = batch.ids.length;
    batch.mesh.instanceMatrix.needsUpdate = true;
    if (batch.mesh.instanceColor) batch.mesh.instanceColor.needsUpdate = true;
    if (batch.ids.length === 0) {
      this.scene.remove(batch.mesh);
      batch.mesh.dispose();
      batch.geometry.dispose();
      this.batches.delete(slot.batch);
    }
    if (this.proxy.userData.entity === id) {
      delete this.proxy.userData.entity;
      this.gizmo.detach();
    }
  }

  /** Other people's cursors (a dot) and cameras (a small cone looking their way). */
  people(people: Person[], myAuthor: number | null): void {
    const seen = new Set<number>();
    if (people.length > 0 || this.markers.size > 0) this.invalidate();
    for (const p of people) {
      if (p.author === myAuthor) continue;
      seen.add(p.author);
      let g = this.markers.get(p.author);
      if (!g) {
        g = new THREE.Group();
        const mat = new THREE.MeshBasicNodeMaterial({ color: new THREE.Color(p.color) });
        const dot = new THREE.Mesh(new THREE.SphereGeometry(0.06, 12, 8), mat);
        dot.name = 'cursor';
        const cam = new THREE.Mesh(new THREE.ConeGeometry(0.12, 0.3, 4), mat);
        cam.name = 'camera';
        cam.rotation.x = -Math.PI / 2;
        const camHolder = new THREE.Group();
        camHolder.name = 'head';
        camHolder.add(cam);
        g.add(dot, camHolder);
        // Hidden until placed: a new marker appears where its first update says, not eased in.
        dot.visible = false;
        camHolder.visible = false;
        this.markers.set(p.author, g);
        this.scene.add(g);
      }
      const now = performance.now();
      const dot = g.getObjectByName('cursor')!;
      if (p.cursor) moveMarker(dot, new THREE.Vector3(...p.cursor), null, now);
      dot.visible = p.cursor !== null;
      const head = g.getObjectByName('head')!;
      if (p.head) {
        const rotation = new THREE.Quaternion(...p.head.rotation);
        moveMarker(head, new THREE.Vector3(...p.head.position), rotation, now);
      }
      head.visible = p.head !== null;
    }
    for (const [author, g] of this.markers) {
      if (!seen.has(author)) {
        this.scene.remove(g);
        this.markers.delete(author);
      }
    }
  }

  /** Moves others' markers along toward their latest update; whether any is still on its way. */
  private easeMarkers(now: number): boolean {
    let moving = false;
    for (const g of this.markers.values()) {
      for (const part of g.children) {
        const e = part.userData.ease as Ease | undefined;
        if (!e) continue;
        const elapsed = now - e.since;
        const at = playout(e.from, e.to, elapsed, this.meshes.presenceTickMs());
        part.position.set(at[0], at[1], at[2]);
        part.quaternion.set(at[3], at[4], at[5], at[6]);
        if (at[7] === 0) moving = true;
        else delete part.userData.ease;
      }
    }
    return moving;
  }

  /** A scene point in page (CSS pixel) coordinates. */
  project(p: Vec3): [number, number] {
    const r = this.canvasRect();
    const v = new THREE.Vector3(...p).project(this.camera);
    return [r.left + ((v.x + 1) / 2) * r.width, r.top + ((1 - v.y) / 2) * r.height];
  }

  /**
   * Page coordinates of a point on the gizmo's `axis` handle and of a point further along the
   * axis (for tests that drag the gizmo like a user). TransformControls scales its handles
   * with the camera distance; its translate picker spans 0–0.6 of that scale.
   */
  gizmoAxis(axis: 'x' | 'y' | 'z'): { grab: [number, number]; along: [number, number] } | null {
    const obj = this.gizmo.object;
    if (!obj) return null;
    const pos = obj.getWorldPosition(new THREE.Vector3());
    const factor =
      pos.distanceTo(this.camera.position) *
      Math.min((1.9 * Math.tan((Math.PI * this.camera.fov) / 360)) / this.camera.zoom, 7) *
      (this.gizmo.size / 4);
    const dir = new THREE.Vector3(axis === 'x' ? 1 : 0, axis === 'y' ? 1 : 0, axis === 'z' ? 1 : 0);
    const at = (k: number) => {
      const p = pos.clone().addScaledVector(dir, k * factor);
      return this.project([p.x, p.y, p.z]);
    };
    return { grab: at(0.4), along: at(1.0) };
  }

  /** The point the view orbits, on the ground: where new objects go. */
  viewCentre(): [number, number] {
    return [this.orbit.target.x, this.orbit.target.z];
  }

  /**
   * The part of the world this view shows others' presence in: a cube around the point the
   * view orbits, four times as wide as the camera is far from it (at least 32 m each way).
   */
  viewRegion(): { center: Vec3; halfExtent: number } {
    const t = this.orbit.target;
    const distance = this.camera.position.distanceTo(t);
    return { center: [t.x, t.y, t.z], halfExtent: Math.max(32, 4 * distance) };
  }

  /** The camera pose, for presence. */
  cameraPose(): { position: Vec3; rotation: [number, number, number, number] } {
    const p = this.camera.position;
    const q = this.camera.quaternion;
    return { position: [p.x, p.y, p.z], rotation: [q.x, q.y, q.z, q.w] };
  }

  /** Edit mode on entity `id`: its editable mesh (edit triangulation) replaces its instance. */
  enterEdit(id: number, positions: Float32Array, normals: Float32Array, indices: Uint32Array, faces: number[]): void {
    this.exitEdit();
    const group = new THREE.Group();
    const mesh = new THREE.Mesh(geometryOf(positions, normals, indices), this.editMaterial(0xb8bcc6));
    const wire = new THREE.LineSegments(new THREE.BufferGeometry(), new THREE.LineBasicNodeMaterial({ color: 0x15171c }));
    const lit = new THREE.Mesh(new THREE.BufferGeometry(), this.editMaterial(LIT));
    const litEdges = new THREE.LineSegments(new THREE.BufferGeometry(), new THREE.LineBasicNodeMaterial({ color: LIT }));
    const dot = new THREE.OctahedronGeometry(0.025);
    const dots = new THREE.InstancedMesh(dot, new THREE.MeshBasicNodeMaterial(), 1);
    dots.count = 0;
    dots.frustumCulled = false;
    group.add(mesh, wire, lit, litEdges, dots);
    this.scene.add(group);
    this.edit = { id, group, mesh, faces, wire, lit, litEdges, dots, preview: null };
    this.setEditMesh(positions, normals, indices, faces);
    const slot = this.slots.get(id);
    if (slot) this.place(id, slot.transform);
    if (this.gizmo.object) this.gizmo.detach();
    this.invalidate();
  }

  /**
   * Edit mode: the gizmo on the selected elements, at their centre `centre` (entity space), or
   * off (`null`; also while a drag is on).
   */
  editGizmo(centre: Vec3 | null): void {
    const e = this.edit;
    if (this.editDragStart) return;
    if (!e || centre === null || !this.gizmo.enabled) {
      if (this.gizmo.object === this.editProxy) this.gizmo.detach();
      this.gizmo.getHelper().visible = false;
      this.invalidate();
      return;
    }
    const slot = this.slots.get(e.id);
    if (!slot) return;
    const t = slot.transform;
    MATRIX.compose(new THREE.Vector3(...t.translation), new THREE.Quaternion(...t.rotation), new THREE.Vector3(...t.scale));
    this.editProxy.position.copy(new THREE.Vector3(...centre).applyMatrix4(MATRIX));
    this.editProxy.quaternion.set(...t.rotation);
    this.editProxy.scale.set(1, 1, 1);
    this.editProxy.updateMatrixWorld(true);
    if (!this.editProxy.parent) this.scene.add(this.editProxy);
    if (this.gizmo.object !== this.editProxy) this.gizmo.attach(this.editProxy);
    this.gizmo.getHelper().visible = true;
    this.invalidate();
  }

  /** The drag so far as a map of entity-space points (see `onEditGizmo`). */
  private editMover(): (p: Vec3) => Vec3 {
    const e = this.edit;
    const slot = e ? this.slots.get(e.id) : undefined;
    if (!slot || !this.editDragStart) return (p) => p;
    const t = slot.transform;
    const world = new THREE.Matrix4().compose(
      new THREE.Vector3(...t.translation),
      new THREE.Quaternion(...t.rotation),
      new THREE.Vector3(...t.scale),
    );
    this.editProxy.updateMatrixWorld(true);
    // local → world, the drag (now · start⁻¹), world → local.
    const m = world
      .clone()
      .invert()
      .multiply(this.editProxy.matrixWorld)
      .multiply(this.editDragStart.clone().invert())
      .multiply(world);
    return (p) => {
      const v = new THREE.Vector3(...p).applyMatrix4(m);
      return [v.x, v.y, v.z];
    };
  }

  /** The entity in edit mode, if any. */
  editing(): number | null {
    return this.edit?.id ?? null;
  }

  /** New geometry for the edited mesh (someone's edit landed, or one's own). */
  setEditMesh(positions: Float32Array, normals: Float32Array, indices: Uint32Array, faces: number[]): void {
    const e = this.edit;
    if (!e) return;
    e.mesh.geometry.dispose();
    e.mesh.geometry = geometryOf(positions, normals, indices);
    e.faces = faces;
    // Face outlines: each triangle fan's outer edges (consecutive corners of one face).
    const seg: number[] = [];
    const firstOf = new Map<number, number>();
    faces.forEach((f, t) => {
      if (!firstOf.has(f)) firstOf.set(f, t);
    });
    const corner = (i: number) => [positions[i * 3], positions[i * 3 + 1], positions[i * 3 + 2]];
    for (const [f, t0] of firstOf) {
      const start = indices[t0 * 3];
      let tris = 0;
      while (faces[t0 + tris] === f) tris += 1;
      const n = tris + 2;
      for (let c = 0; c < n; c += 1) seg.push(...corner(start + c), ...corner(start + ((c + 1) % n)));
    }
    e.wire.geometry.dispose();
    e.wire.geometry = new THREE.BufferGeometry();
    e.wire.geometry.setAttribute('position', new THREE.Float32BufferAttribute(seg, 3));
    this.invalidate();
  }

  /** Lights the selected elements of the edited mesh. */
  setEditLit(lit: EditLit): void {
    const e = this.edit;
    if (!e) return;
    const g = e.mesh.geometry;
    const pos = g.getAttribute('position') as THREE.BufferAttribute;
    const nor = g.getAttribute('normal') as THREE.BufferAttribute;
    const idx = g.getIndex()!;
    const want = new Set(lit.faces);
    const tri: number[] = [];
    e.faces.forEach((f, t) => {
      if (!want.has(f)) return;
      for (let k = 0; k < 3; k += 1) {
        const i = idx.getX(t * 3 + k);
        // Just off the surface, so it never fights the face it lights.
        tri.push(pos.getX(i) + nor.getX(i) * 0.002, pos.getY(i) + nor.getY(i) * 0.002, pos.getZ(i) + nor.getZ(i) * 0.002);
      }
    });
    e.lit.geometry.dispose();
    e.lit.geometry = new THREE.BufferGeometry();
    e.lit.geometry.setAttribute('position', new THREE.Float32BufferAttribute(tri, 3));
    e.litEdges.geometry.dispose();
    e.litEdges.geometry = new THREE.BufferGeometry();
    e.litEdges.geometry.setAttribute('position', new THREE.Float32BufferAttribute(lit.edges.flatMap(([a, b]) => [...a, ...b]), 3));
    const shown = lit.dots ? lit.vertices.length : 0;
    if (shown > e.dots.instanceMatrix.count) {
      const dots = new THREE.InstancedMesh(e.dots.geometry, e.dots.material, Math.max(shown, 2 * e.dots.instanceMatrix.count));
      dots.frustumCulled = false;
      e.group.remove(e.dots);
      e.dots.dispose();
      e.group.add(dots);
      e.dots = dots;
    }
    const selected = new Set(lit.selectedVertices);
    for (let i = 0; i < shown; i += 1) {
      MATRIX.makeTranslation(...lit.vertices[i]);
      e.dots.setMatrixAt(i, MATRIX);
      e.dots.setColorAt(i, COLOR.set(selected.has(i) ? LIT : 0x15171c));
    }
    e.dots.count = shown;
    e.dots.instanceMatrix.needsUpdate = true;
    if (e.dots.instanceColor) e.dots.instanceColor.needsUpdate = true;
    this.invalidate();
  }

  /** Shows what an edit in progress would make (or, with `null`, the mesh as it is). */
  showPreview(mesh: { positions: Float32Array; normals: Float32Array; indices: Uint32Array } | null): void {
    const e = this.edit;
    if (!e) return;
    if (e.preview) {
      e.group.remove(e.preview);
      e.preview.geometry.dispose();
      e.preview = null;
    }
    if (mesh) {
      e.preview = new THREE.Mesh(geometryOf(mesh.positions, mesh.normals, mesh.indices), this.editMaterial(0xd9dce3));
      e.group.add(e.preview);
    }
    e.mesh.visible = mesh === null;
    e.lit.visible = mesh === null;
    e.wire.visible = mesh === null;
    this.invalidate();
  }

  /** Another member's mesh-edit preview of entity `id` in their colour (`null` removes it). */
  remoteEdit(id: number, mesh: { positions: Float32Array; normals: Float32Array; indices: Uint32Array } | null, color: string): void {
    const old = this.remoteEdits.get(id);
    if (old) {
      this.scene.remove(old);
      old.geometry.dispose();
      this.remoteEdits.delete(id);
    }
    if (mesh) {
      const m = new THREE.Mesh(
        geometryOf(mesh.positions, mesh.normals, mesh.indices),
        new THREE.MeshStandardNodeMaterial({ color: new THREE.Color(color), roughness: 0.6, side: THREE.DoubleSide }),
      );
      this.remoteEdits.set(id, m);
      this.scene.add(m);
    }
    const slot = this.slots.get(id);
    if (slot) this.place(id, slot.transform);
    this.invalidate();
  }

  /**
   * Another member's selected elements on entity `id`, in their colour: faces (triangles in
   * entity space, by threes), vertices (dots) and edges (segments); `null` removes them.
   */
  remoteSelection(
    author: number,
    id: number,
    lit: { triangles: number[]; vertices: Vec3[]; edges: [Vec3, Vec3][] } | null,
    color: string,
  ): void {
    const old = this.remoteSelections.get(author);
    if (old) {
      this.scene.remove(old);
      old.traverse((o) => {
        if (o instanceof THREE.Mesh || o instanceof THREE.LineSegments) o.geometry.dispose();
      });
      this.remoteSelections.delete(author);
    }
    if (lit) {
      const g = new THREE.Group();
      g.userData.entity = id;
      const c = new THREE.Color(color);
      const faces = new THREE.BufferGeometry();
      faces.setAttribute('position', new THREE.Float32BufferAttribute(lit.triangles, 3));
      g.add(new THREE.Mesh(faces, new THREE.MeshBasicNodeMaterial({ color: c, transparent: true, opacity: 0.55, side: THREE.DoubleSide })));
      const lines = new THREE.BufferGeometry();
      lines.setAttribute('position', new THREE.Float32BufferAttribute(lit.edges.flatMap(([a, b]) => [...a, ...b]), 3));
      g.add(new THREE.LineSegments(lines, new THREE.LineBasicNodeMaterial({ color: c })));
      const dot = new THREE.OctahedronGeometry(0.03);
      for (const p of lit.vertices) {
        const m = new THREE.Mesh(dot, new THREE.MeshBasicNodeMaterial({ color: c }));
        m.position.set(...p);
        g.add(m);
      }
      this.remoteSelections.set(author, g);
      this.scene.add(g);
      const slot = this.slots.get(id);
      if (slot) applyTransform(g, slot.transform);
    }
    this.invalidate();
  }

  /** Other people's markers as drawn: author and cursor position (`null` while hidden). */
  markerList(): { author: number; cursor: Vec3 | null }[] {
    return [...this.markers].map(([author, g]) => {
      const dot = g.getObjectByName('cursor')!;
      return { author, cursor: dot.visible ? [dot.position.x, dot.position.y, dot.position.z] : null };
    });
  }

  /** Selection outlines as drawn: [selector, entity]. */
  outlineList(): [number, number][] {
    return [...this.outlines].map(([key, h]) => [Number(key.split(':')[0]), h.userData.entity as number]);
  }

  /** Members whose element selection shows, with the entity and how many elements. */
  remoteSelectionList(): [number, number, number][] {
    return [...this.remoteSelections].map(([a, g]) => [a, g.userData.entity as number, g.children.length]);
  }

  /** Entities showing another member's edit preview. */
  remoteEditIds(): number[] {
    return [...this.remoteEdits.keys()];
  }

  /** Back to object mode: the instance shows again. */
  exitEdit(): void {
    const e = this.edit;
    if (!e) return;
    if (this.gizmo.object === this.editProxy) this.gizmo.detach();
    this.editDragStart = null;
    this.edit = null;
    this.scene.remove(e.group);
    e.group.traverse((o) => {
      if (o instanceof THREE.Mesh || o instanceof THREE.LineSegments) o.geometry.dispose();
    });
    const slot = this.slots.get(e.id);
    if (slot) this.place(e.id, slot.transform);
    this.invalidate();
  }

  /** Metres a pixel covers at scene point `p` (for gestures measured in pixels). */
  metresPerPixel(p: Vec3): number {
    const d = this.camera.position.distanceTo(new THREE.Vector3(...p));
    const h = this.canvas.getBoundingClientRect().height || 1;
    return (2 * d * Math.tan(THREE.MathUtils.degToRad(this.camera.fov / 2))) / h;
  }

  /** A pointer movement of (`dx`, `dy`) pixels in the view plane at entity `id`, in its space. */
  localDelta(id: number, dx: number, dy: number): Vec3 {
    const slot = this.slots.get(id);
    if (!slot) return [0, 0, 0];
    const t = slot.transform;
    const perPixel = this.metresPerPixel(t.translation);
    this.camera.updateMatrixWorld();
    const right = new THREE.Vector3().setFromMatrixColumn(this.camera.matrixWorld, 0);
    const up = new THREE.Vector3().setFromMatrixColumn(this.camera.matrixWorld, 1);
    const d = right.multiplyScalar(dx * perPixel).add(up.multiplyScalar(-dy * perPixel));
    d.applyQuaternion(new THREE.Quaternion(...t.rotation).invert()).divide(new THREE.Vector3(...t.scale));
    return [d.x, d.y, d.z];
  }

  /** The direction the camera looks along, in entity `id`'s space (unit length). */
  localViewAxis(id: number): Vec3 {
    const slot = this.slots.get(id);
    const d = new THREE.Vector3();
    this.camera.getWorldDirection(d);
    if (slot) {
      const t = slot.transform;
      d.applyQuaternion(new THREE.Quaternion(...t.rotation).invert()).divide(new THREE.Vector3(...t.scale));
    }
    d.normalize();
    return [d.x, d.y, d.z];
  }

  /** Where entity-space point `p` of entity `id` shows in the canvas (client pixels). */
  projectLocal(id: number, p: Vec3): [number, number] | null {
    const slot = this.slots.get(id);
    if (!slot) return null;
    const t = slot.transform;
    MATRIX.compose(new THREE.Vector3(...t.translation), new THREE.Quaternion(...t.rotation), new THREE.Vector3(...t.scale));
    const w = new THREE.Vector3(...p).applyMatrix4(MATRIX);
    return this.project([w.x, w.y, w.z]);
  }

  private editMaterial(color: number): THREE.MeshStandardNodeMaterial {
    return new THREE.MeshStandardNodeMaterial({ color, roughness: 0.6, metalness: 0.0, side: THREE.DoubleSide });
  }

  /**
   * The canvas's place on the page, with the camera's aspect brought in step with it first:
   * the ResizeObserver runs only before the next frame, so right after a layout change (the
   * edit palette showing) a click or a projection would otherwise use the old aspect.
   */
  private canvasRect(): DOMRect {
    const r = this.canvas.getBoundingClientRect();
    const aspect = (this.canvas.clientWidth || 1) / (this.canvas.clientHeight || 1);
    if (aspect !== this.camera.aspect) this.resize();
    return r;
  }

  private pointerRay(ev: PointerEvent): void {
    const r = this.canvasRect();
    const ndc = new THREE.Vector2(((ev.clientX - r.left) / r.width) * 2 - 1, -((ev.clientY - r.top) / r.height) * 2 + 1);
    this.raycaster.setFromCamera(ndc, this.camera);
  }

  private hit(): { id: number | null; point: THREE.Vector3 | null } {
    const batches = [...this.batches.values()];
    const hits = this.raycaster.intersectObjects(batches.map((b) => b.mesh), false);
    for (const h of hits) {
      const batch = batches.find((b) => b.mesh === h.object);
      const id = h.instanceId !== undefined ? batch?.ids[h.instanceId] : undefined;
      if (id !== undefined) return { id, point: h.point };
    }
    const p = new THREE.Vector3();
    return { id: null, point: this.raycaster.ray.intersectPlane(this.ground, p) };
  }

  private installPointer(): void {
    let down: { x: number; y: number } | null = null;
    this.canvas.addEventListener('pointerdown', (ev) => {
      down = { x: ev.clientX, y: ev.clientY };
    });
    this.canvas.addEventListener('pointerup', (ev) => {
      if (!down || this.dragStart) return;
      const moved = Math.hypot(ev.clientX - down.x, ev.clientY - down.y);
      down = null;
      // A click, not an orbit drag, and not on the gizmo.
      // On a gizmo handle (only while the gizmo is on something: a detached gizmo may keep
      // the axis it was last hovered on).
      const onGizmo = this.gizmo.object !== undefined && (this.gizmo as unknown as { axis: string | null }).axis;
      if (moved > 4 || this.modal || onGizmo) return;
      this.pointerRay(ev);
      if (this.edit) {
        // Frames render on demand: the edit group may have moved since the last one.
        this.edit.group.updateMatrixWorld(true);
        const h = this.raycaster.intersectObject(this.edit.mesh, false)[0];
        if (h && h.faceIndex !== undefined && h.faceIndex !== null) {
          const local = this.edit.mesh.worldToLocal(h.point.clone());
          this.onEditPick(this.edit.faces[h.faceIndex] ?? null, [local.x, local.y, local.z], ev.shiftKey);
        } else {
          this.onEditPick(null, null, ev.shiftKey);
        }
        return;
      }
      this.onPick(this.hit().id, ev.shiftKey);
    });
    let last = 0;
    this.canvas.addEventListener('pointermove', (ev) => {
      const now = performance.now();
      if (now - last < 50) return; // 20 Hz is plenty for a cursor
      last = now;
      this.pointerRay(ev);
      const p = this.hit().point;
      this.onHover(p ? [p.x, p.y, p.z] : null);
    });
  }
}

function geometryOf(positions: Float32Array, normals: Float32Array, indices: Uint32Array): THREE.BufferGeometry {
  const g = new THREE.BufferGeometry();
  g.setAttribute('position', new THREE.BufferAttribute(positions, 3));
  g.setAttribute('normal', new THREE.BufferAttribute(normals, 3));
  g.setIndex(new THREE.BufferAttribute(indices, 1));
  g.computeBoundingSphere();
  return g;
}

function transformOf(o: THREE.Object3D): Transform {
  return {
    translation: [o.position.x, o.position.y, o.position.z],
    rotation: [o.quaternion.x, o.quaternion.y, o.quaternion.z, o.quaternion.w],
    scale: [o.scale.x, o.scale.y, o.scale.z],
  };
}

function applyTransform(o: THREE.Object3D, t: Transform): void {
  o.position.set(...t.translation);
  o.quaternion.set(...t.rotation);
  o.scale.set(...t.scale);
}
