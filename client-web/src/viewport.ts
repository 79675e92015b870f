// The 3D view: three.js's WebGPURenderer (WebGPU; it falls back to WebGL2 by itself where
// WebGPU is missing), meshes from the replica, selection outlines in each selector's color,
// other people's cursors and cameras, and a TransformControls gizmo whose drags show at once.

import * as THREE from 'three/webgpu';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { TransformControls } from 'three/addons/controls/TransformControls.js';
import type { EntityView, Person, SceneView, Tool, Transform, Vec3 } from './state';
import { authorColor } from './state';

export interface MeshSource {
  positions(id: number): Float32Array;
  normals(id: number): Float32Array;
  indices(id: number): Uint32Array;
}

interface Item {
  mesh: THREE.Mesh;
  geometry: string;
  color: string;
}

export class Viewport {
  readonly renderer: THREE.WebGPURenderer;
  readonly scene = new THREE.Scene();
  readonly camera: THREE.PerspectiveCamera;
  private orbit: OrbitControls;
  private gizmo: TransformControls;
  private items = new Map<number, Item>();
  /** One material per color and one geometry per primitive: fewer pipeline and buffer switches. */
  private materials = new Map<string, THREE.MeshStandardNodeMaterial>();
  private geometries = new Map<string, { geometry: THREE.BufferGeometry; users: number }>();
  private outlines = new Map<string, THREE.BoxHelper>();
  private markers = new Map<number, THREE.Group>();
  private dragStart: Transform | null = null;
  private raycaster = new THREE.Raycaster();
  private ground = new THREE.Plane(new THREE.Vector3(0, 1, 0), 0);
  /** Milliseconds between the last frames (ring), for telemetry and benchmarks. */
  readonly frameTimes: number[] = [];
  private lastFrame = 0;
  /** Render only when something changed (a still scene costs nothing); `continuous` for benchmarks. */
  private dirty = true;
  continuous = false;
  backend = 'starting';

  /** A gizmo drag ended: the entity's transform before and after. */
  onDragEnd: (id: number, from: Transform, to: Transform) => void = () => {};
  /** A click picked an entity (or empty space: `null`). */
  onPick: (id: number | null) => void = () => {};
  /** The pointer moved over the scene (hit point in scene space). */
  onHover: (point: Vec3 | null) => void = () => {};

  constructor(private canvas: HTMLCanvasElement, private meshes: MeshSource) {
    this.renderer = new THREE.WebGPURenderer({ canvas, antialias: true });
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
    this.gizmo.addEventListener('dragging-changed', (e) => {
      const dragging = (e as unknown as { value: boolean }).value;
      this.orbit.enabled = !dragging;
      const obj = this.gizmo.object;
      if (!obj) return;
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
    await this.renderer.init();
    const backend = (this.renderer as unknown as { backend: { isWebGPUBackend?: boolean } }).backend;
    this.backend = backend.isWebGPUBackend ? 'WebGPU' : 'WebGL2';
    const resize = () => {
      const w = this.canvas.clientWidth || 1;
      const h = this.canvas.clientHeight || 1;
      this.renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
      this.renderer.setSize(w, h, false);
      this.camera.aspect = w / h;
      this.camera.updateProjectionMatrix();
      this.invalidate();
    };
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
      }
      this.lastFrame = t;
      for (const o of this.outlines.values()) o.update();
      this.renderer.render(this.scene, this.camera);
    });
  }

  /** Triangles in the view's meshes. */
  triangles(): number {
    let n = 0;
    for (const item of this.items.values()) n += (item.mesh.geometry.index?.count ?? 0) / 3;
    return n;
  }

  /** Schedules a frame. */
  invalidate(): void {
    this.dirty = true;
  }

  /** Whether a gizmo drag is in progress on `id`. */
  dragging(id: number): boolean {
    return this.dragStart !== null && this.gizmo.object?.userData.entity === id;
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
      let item = this.items.get(e.id);
      if (!item || item.geometry !== e.geometry) {
        if (item) this.dropItem(e.id, item);
        item = this.makeItem(e);
        this.items.set(e.id, item);
      }
      const color = e.color.map((c) => c.toFixed(4)).join(',');
      if (item.color !== color) {
        item.mesh.material = this.material(e.color);
        item.color = color;
      }
      if (!this.dragging(e.id)) applyTransform(item.mesh, transformFor(e));
    }
    for (const [id, item] of this.items) if (!seen.has(id)) this.dropItem(id, item);

    // Outlines: one per (selector, entity), in the selector's color.
    const wanted = new Map<string, [number, number]>();
    for (const s of view.selections) {
      for (const id of s.entities) wanted.set(`${s.author}:${id}`, [s.author, id]);
    }
    if (selected !== null && myAuthor !== null) wanted.set(`${myAuthor}:${selected}`, [myAuthor, selected]);
    for (const [key, helper] of this.outlines) {
      if (!wanted.has(key) || !this.items.has(wanted.get(key)![1])) {
        this.scene.remove(helper);
        helper.dispose();
        this.outlines.delete(key);
      }
    }
    for (const [key, [author, id]] of wanted) {
      const item = this.items.get(id);
      if (!item || this.outlines.has(key)) continue;
      const helper = new THREE.BoxHelper(item.mesh, new THREE.Color(authorColor(author)));
      this.outlines.set(key, helper);
      this.scene.add(helper);
    }

    this.invalidate();
    // The gizmo follows this user's selection.
    const target = selected !== null ? this.items.get(selected)?.mesh : undefined;
    if (target && this.gizmo.object !== target) this.gizmo.attach(target);
    if (!target && this.gizmo.object) this.gizmo.detach();
    this.gizmo.getHelper().visible = this.gizmo.enabled && target !== undefined;
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
        this.markers.set(p.author, g);
        this.scene.add(g);
      }
      const dot = g.getObjectByName('cursor')!;
      dot.visible = p.cursor !== null;
      if (p.cursor) dot.position.set(...p.cursor);
      const head = g.getObjectByName('head')!;
      head.visible = p.head !== null;
      if (p.head) {
        head.position.set(...p.head.position);
        head.quaternion.set(...p.head.rotation);
      }
    }
    for (const [author, g] of this.markers) {
      if (!seen.has(author)) {
        this.scene.remove(g);
        this.markers.delete(author);
      }
    }
  }

  /** A scene point in page (CSS pixel) coordinates. */
  project(p: Vec3): [number, number] {
    const v = new THREE.Vector3(...p).project(this.camera);
    const r = this.canvas.getBoundingClientRect();
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

  /** The camera pose, for presence. */
  cameraPose(): { position: Vec3; rotation: [number, number, number, number] } {
    const p = this.camera.position;
    const q = this.camera.quaternion;
    return { position: [p.x, p.y, p.z], rotation: [q.x, q.y, q.z, q.w] };
  }

  /** Frames the camera on the scene's content. */
  focus(id: number): void {
    const item = this.items.get(id);
    if (!item) return;
    const box = new THREE.Box3().setFromObject(item.mesh);
    box.getCenter(this.orbit.target);
    this.orbit.update();
  }

  private material(c: [number, number, number, number]): THREE.MeshStandardNodeMaterial {
    const key = c.map((v) => v.toFixed(4)).join(',');
    let m = this.materials.get(key);
    if (!m) {
      m = new THREE.MeshStandardNodeMaterial({ roughness: 0.55, metalness: 0.05 });
      m.color.setRGB(c[0], c[1], c[2], THREE.LinearSRGBColorSpace);
      this.materials.set(key, m);
    }
    return m;
  }

  private makeItem(e: EntityView): Item {
    // Primitives share one geometry; an edited mesh (kind "mesh") gets its own.
    const key = e.kind === 'mesh' ? `${e.id}:${e.geometry}` : e.geometry;
    let shared = this.geometries.get(key);
    if (!shared) {
      const geometry = new THREE.BufferGeometry();
      geometry.setAttribute('position', new THREE.BufferAttribute(this.meshes.positions(e.id), 3));
      geometry.setAttribute('normal', new THREE.BufferAttribute(this.meshes.normals(e.id), 3));
      geometry.setIndex(new THREE.BufferAttribute(this.meshes.indices(e.id), 1));
      geometry.computeBoundingSphere();
      shared = { geometry, users: 0 };
      this.geometries.set(key, shared);
    }
    shared.users += 1;
    const mesh = new THREE.Mesh(shared.geometry, this.material(e.color));
    mesh.userData.entity = e.id;
    mesh.userData.geometryKey = key;
    this.scene.add(mesh);
    return { mesh, geometry: e.geometry, color: e.color.map((c) => c.toFixed(4)).join(',') };
  }

  private dropItem(id: number, item: Item): void {
    if (this.gizmo.object === item.mesh) this.gizmo.detach();
    this.scene.remove(item.mesh);
    const key = item.mesh.userData.geometryKey as string;
    const shared = this.geometries.get(key);
    if (shared) {
      shared.users -= 1;
      if (shared.users <= 0) {
        shared.geometry.dispose();
        this.geometries.delete(key);
      }
    }
    this.items.delete(id);
  }

  private pointerRay(ev: PointerEvent): void {
    const r = this.canvas.getBoundingClientRect();
    const ndc = new THREE.Vector2(((ev.clientX - r.left) / r.width) * 2 - 1, -((ev.clientY - r.top) / r.height) * 2 + 1);
    this.raycaster.setFromCamera(ndc, this.camera);
  }

  private hit(): { id: number | null; point: THREE.Vector3 | null } {
    const hits = this.raycaster.intersectObjects([...this.items.values()].map((i) => i.mesh), false);
    if (hits.length > 0) return { id: hits[0].object.userData.entity as number, point: hits[0].point };
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
      if (moved > 4 || (this.gizmo as unknown as { axis: string | null }).axis) return;
      this.pointerRay(ev);
      this.onPick(this.hit().id);
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
