import { describe, expect, it } from 'vitest';
import {
  reconnectDelayMs,
  applyPresence,
  authorColor,
  authorLabel,
  bytesPerSecond,
  canEdit,
  displayName,
  eulerDegFromQuat,
  hexToLinear,
  inviteLink,
  linearToHex,
  parseRoute,
  perSecond,
  presentPeople,
  quatFromEulerDeg,
  readOnlyReason,
  refusalText,
  shortcut,
  ticketFromPaste,
  type Person,
  placeNew,
  applyLeft,
  shownSelections,
  historyRows,
  namedAuthors,
  namedEntities,
  type HistoryStep,
  elementKey,
  extrudeCommand,
  extrudeDistance,
  keepSelection,
  pickElement,
  selectedElements,
  toggleSelection,
  triangleFaces,
  type EditMeshView,
  grabCommand,
  selectedVertexIndices,
  weldCommand,
  clickSelect,
  sameChange,
  boxSelect,
  applyElementSelection,
  freshElementSelections,
  ELEMENT_SELECTION_TTL_MS,
  turnOrScaleCommand,
} from './state';


describe('routes and invites', () => {
  it('reads a join route and ignores anything else', () => {
    expect(parseRoute('#/join/mwj1_abc')).toEqual({ kind: 'join', ticket: 'mwj1_abc' });
    expect(parseRoute(`#/join/${encodeURIComponent('mwj1_a+b/c=')}`)).toEqual({
      kind: 'join',
      ticket: 'mwj1_a+b/c=',
    });
    expect(parseRoute('#/join/not-a-ticket')).toEqual({ kind: 'landing' });
    expect(parseRoute('')).toEqual({ kind: 'landing' });
  });

  it('round-trips a ticket through an invite link and a paste', () => {
    const link = inviteLink('http://localhost:8080', 'mwj1_x+y/z');
    expect(parseRoute(new URL(link).hash)).toEqual({ kind: 'join', ticket: 'mwj1_x+y/z' });
    expect(ticketFromPaste(link)).toBe('mwj1_x+y/z');
    expect(ticketFromPaste('  mwj1_plain  ')).toBe('mwj1_plain');
    expect(ticketFromPaste('hello')).toBeNull();
  });
});

describe('roles', () => {
  it('lets editors and admins edit and tells viewers why they cannot', () => {
    expect(canEdit('editor')).toBe(true);
    expect(canEdit('admin')).toBe(true);
    expect(canEdit('viewer')).toBe(false);
    expect(readOnlyReason('editor')).toBeNull();
    expect(readOnlyReason('viewer')).toMatch(/viewer role/);
    expect(readOnlyReason('viewer', true)).toMatch(/an admin made you a viewer/);
    expect(readOnlyReason(null)).toMatch(/Not joined/);
  });
});

describe('people', () => {
  it('gives authors distinct, stable colors', () => {
    const colors = new Set([1, 2, 3, 4, 5, 6].map(authorColor));
    expect(colors.size).toBe(6);
    expect(authorColor(7)).toBe(authorColor(7));
  });

  it('keeps people heard from recently, latest update wins', () => {
    let people = new Map<number, Person>();
    people = applyPresence(people, { author: 2, cursor: { position: [1, 0, 0] }, head: null }, 1000);
    people = applyPresence(people, { author: 1, cursor: null, head: null }, 1500);
    people = applyPresence(people, { author: 2, cursor: { position: [2, 0, 0] }, head: null }, 2000);
    expect(presentPeople(people, 2000).map((p) => p.author)).toEqual([1, 2]);
    expect(people.get(2)?.cursor).toEqual([2, 0, 0]);
    expect(presentPeople(people, 6800).map((p) => p.author)).toEqual([2]);
    expect(presentPeople(people, 7100)).toEqual([]);
  });
});

describe('telemetry', () => {
  it('counts within a one-second window', () => {
    expect(perSecond([100, 500, 1050, 1900], 2000)).toBe(2);
    expect(bytesPerSecond([[100, 10], [1500, 20], [1999, 5]], 2000)).toBe(25);
  });
});

describe('refusal toasts', () => {
  it('says why a command was refused', () => {
    expect(refusalText({ code: 'permission', message: 'viewers cannot Spawn' })).toBe(
      'Not allowed: viewers cannot Spawn',
    );
    expect(refusalText({ code: 'conflict', message: 'x' })).toMatch(/^Conflict/);
    expect(
      refusalText(
        { code: 'conflict', message: 'an edit by author#3 to entity#100000004 came first, and this one was made without seeing it' },
        1,
        { '3': 'Cy' },
      ),
    ).toBe('Conflict: an edit by Cy to entity#100000004 came first, and this one was made without seeing it');
    expect(refusalText({ code: 'replay', message: 'seq 3 reused' })).toBe('Refused (replay): seq 3 reused');
  });
});

describe('Euler angles', () => {
  it('round-trips Euler angles', () => {
    const e: [number, number, number] = [10, -20, 30];
    eulerDegFromQuat(quatFromEulerDeg(e)).forEach((v, i) => expect(v).toBeCloseTo(e[i], 6));
  });
});

describe('entity ids and names', () => {
  const id = (author: number, counter: number) => author * 2 ** 32 + counter;

  it('names unnamed entities by kind and id', () => {
    expect(displayName({ id: id(2, 5), name: '', kind: 'cube' })).toBe('Cube 2.5');
    expect(displayName({ id: id(2, 5), name: 'Chair', kind: 'cube' })).toBe('Chair');
  });
});

describe('colors', () => {
  it('converts between sRGB hex and linear', () => {
    expect(linearToHex(hexToLinear('#ff8000'))).toBe('#ff8000');
    expect(hexToLinear('#ffffff')).toEqual([1, 1, 1, 1]);
    expect(hexToLinear('#000000')).toEqual([0, 0, 0, 1]);
  });
});

describe('shortcuts', () => {
  it('maps keys to actions, and only Escape inside text fields', () => {
    expect(shortcut('g', false)).toEqual({ kind: 'tool', tool: 'move' });
    expect(shortcut('R', false)).toEqual({ kind: 'tool', tool: 'rotate' });
    expect(shortcut('s', false)).toEqual({ kind: 'tool', tool: 'scale' });
    expect(shortcut('Delete', false)).toEqual({ kind: 'delete' });
    expect(shortcut('Escape', false)).toEqual({ kind: 'deselect' });
    expect(shortcut('t', false)).toEqual({ kind: 'telemetry' });
    expect(shortcut('g', true)).toEqual({ kind: 'none' });
    expect(shortcut('Escape', true)).toEqual({ kind: 'deselect' });
  });

  it('undoes with Ctrl+Z and redoes with Ctrl+Shift+Z or Ctrl+Y, but not inside text fields', () => {
    expect(shortcut('z', false, { ctrl: true })).toEqual({ kind: 'undo' });
    expect(shortcut('Z', false, { ctrl: true, shift: true })).toEqual({ kind: 'redo' });
    expect(shortcut('y', false, { ctrl: true })).toEqual({ kind: 'redo' });
    expect(shortcut('z', true, { ctrl: true })).toEqual({ kind: 'none' });
    expect(shortcut('s', false, { ctrl: true })).toEqual({ kind: 'none' }); // Ctrl+S is not the scale tool
    expect(shortcut('z', false)).toEqual({ kind: 'none' });
  });
});

describe('undo and history', () => {
  const step = (over: Partial<HistoryStep>): HistoryStep => ({
    serial: 1,
    lamport: 5,
    author: 2,
    label: 'extrude faces',
    at_ms: null,
    kinds: ['extrude_faces'],
    entries: 1,
    entities: [2 * 2 ** 32 + 1],
    elements: 12,
    undone: false,
    redoable: false,
    ...over,
  });

  it('names authors in refusals the way the people list does', () => {
    const message = 'cannot undo \u201cmove vertices\u201d: author#3 has since changed vertex 1:0@2';
    expect(namedAuthors(message, 1)).toContain('Author 3 has since changed');
    expect(namedAuthors('author#1 did it', 1)).toBe('you did it');
    expect(refusalText({ code: 'undo', message }, 1)).toMatch(/^Cannot undo .*Author 3 has since changed/);
    const names = (id: number) => (id === 2 ** 32 + 1 ? 'Table' : null);
    expect(namedEntities('the name of entity#100000001', names)).toBe('the name of \u201cTable\u201d');
    expect(namedEntities('entity#5 is gone', names)).toBe('entity#5 is gone');
  });

  it('lists steps with who, what and whether they are undone', () => {
    const rows = historyRows([step({ undone: true }), step({ author: 1, label: 'spawn', elements: 0, at_ms: 0 })], 1);
    expect(rows[0]).toMatchObject({ who: 'Author 2', what: 'Extrude faces · 12 elements', undone: true, when: 'before restart' });
    expect(rows[0].entity).toBe(2 * 2 ** 32 + 1);
    expect(rows[0].color).toBe(authorColor(2));
    expect(rows[1]).toMatchObject({ who: 'You', what: 'Spawn', undone: false });
    expect(rows[1].when).toMatch(/^\d\d:\d\d:\d\d$/);
  });

  it('uses the display names authors chose, wherever it names them', () => {
    const names = { '3': 'Ada', '1': 'Me myself' };
    expect(authorLabel(3, 1, names)).toBe('Ada');
    expect(authorLabel(1, 1, names)).toBe('You');
    expect(authorLabel(4, 1, names)).toBe('Author 4');
    expect(namedAuthors('author#3 has since changed it', 1, names)).toBe('Ada has since changed it');
    expect(historyRows([step({ author: 3 })], 1, names)[0].who).toBe('Ada');
  });


});

describe('placing new objects', () => {
  const at = (x: number, z: number, s = 1) => ({
    translation: [x, 0.5, z] as [number, number, number],
    rotation: [0, 0, 0, 1] as [number, number, number, number],
    scale: [s, s, s] as [number, number, number],
  });
  it('goes on the grid under the view centre when it is free', () => {
    expect(placeNew([0.2, -0.3], [])).toEqual([0, 0]);
    expect(placeNew([3.6, 1.4], [at(0, 0)])).toEqual([3, 1.5]);
  });
  it('goes beside what is there, nearest first, never inside it', () => {
    const first = placeNew([0, 0], [at(0, 0)]);
    expect(Math.hypot(first[0], first[1])).toBe(1.5);
    const scene = [at(0, 0)];
    for (let n = 0; n < 12; n += 1) {
      const [x, z] = placeNew([0, 0], scene);
      for (const t of scene) expect(Math.hypot(t.translation[0] - x, t.translation[2] - z)).toBeGreaterThanOrEqual(1.25);
      scene.push(at(x, z));
    }
    // A big object keeps its whole footprint clear.
    const [x, z] = placeNew([0, 0], [at(0, 0, 4)]);
    expect(Math.hypot(x, z)).toBeGreaterThanOrEqual(2.75);
  });
  it('is the same for the same scene', () => {
    const scene = [at(0, 0), at(1, 0)];
    expect(placeNew([0, 0], scene)).toEqual(placeNew([0, 0], scene));
  });
});

describe('members leaving', () => {
  it('drops their presence at once and hides their selection', () => {
    let people = applyPresence(new Map(), { author: 2, cursor: null, head: null }, 1000);
    people = applyPresence(people, { author: 3, cursor: null, head: null }, 1000);
    const selections = [
      { author: 1, entities: [10] },
      { author: 2, entities: [11] },
      { author: 3, entities: [12] },
      { author: 9, entities: [13] }, // left before we joined: never present
    ];
    expect(shownSelections(selections, presentPeople(people, 1000), 1).map((s) => s.author)).toEqual([1, 2, 3]);
    people = applyLeft(people, 2);
    expect(presentPeople(people, 1000).map((p) => p.author)).toEqual([3]);
    expect(shownSelections(selections, presentPeople(people, 1000), 1).map((s) => s.author)).toEqual([1, 3]);
    // Without presence for the time-to-live, the same.
    expect(shownSelections(selections, presentPeople(people, 1000 + 60_000), null)).toEqual([]);
  });
});

describe('edit mode', () => {
  const k = (index: number) => ({ by: { lamport: 1, author: 2 }, index });
  // A unit square split into a quad and a triangle: vertices 0..4, faces 5 and 6.
  const mesh: EditMeshView = {
    vertices: [
      { id: k(0), p: [0, 0, 0] },
      { id: k(1), p: [1, 0, 0] },
      { id: k(2), p: [1, 0, 1] },
      { id: k(3), p: [0, 0, 1] },
      { id: k(4), p: [2, 0, 0] },
    ],
    faces: [
      { id: k(5), corners: [0, 3, 2, 1] },
      { id: k(6), corners: [1, 2, 4] },
    ],
    edges: [
      { id: k(7), ends: [0, 1] },
      { id: k(8), ends: [1, 2] },
      { id: k(9), ends: [2, 3] },
      { id: k(10), ends: [0, 3] },
      { id: k(11), ends: [1, 4] },
      { id: k(12), ends: [2, 4] },
    ],
  };

  it('switches modes and element kinds with Blender keys', () => {
    expect(shortcut('Tab', false)).toEqual({ kind: 'mode' });
    expect(shortcut('1', false)).toEqual({ kind: 'elements', mode: 'vertex' });
    expect(shortcut('2', false)).toEqual({ kind: 'elements', mode: 'edge' });
    expect(shortcut('3', false)).toEqual({ kind: 'elements', mode: 'face' });
    expect(shortcut('e', false)).toEqual({ kind: 'extrude' });
    expect(shortcut('x', false)).toEqual({ kind: 'delete' });
    expect(shortcut('w', false)).toEqual({ kind: 'subdivide' });
    expect(shortcut('2', false, { ctrl: true })).toEqual({ kind: 'smooth', levels: 2 });
    expect(shortcut('D', false, { shift: true })).toEqual({ kind: 'duplicate' });
    expect(shortcut('m', false)).toEqual({ kind: 'weld' });
    expect(shortcut('b', false)).toEqual({ kind: 'box' });
    expect(shortcut('m', false, { ctrl: true })).toEqual({ kind: 'mirror' });
    expect(shortcut('Tab', true)).toEqual({ kind: 'none' });
  });

  it('maps triangles to faces and a click to the element under it', () => {
    expect(triangleFaces(mesh)).toEqual([0, 0, 1]);
    expect(pickElement(mesh, 0, [0.5, 0, 0.5], 'face')).toBe('1.2.5');
    expect(pickElement(mesh, 0, [0.9, 0, 0.95], 'vertex')).toBe('1.2.2');
    expect(pickElement(mesh, 1, [1.5, 0, 0.05], 'edge')).toBe('1.2.11');
    expect(pickElement(mesh, 7, [0, 0, 0], 'face')).toBeNull();
  });

  it('selects, adds with Shift, removes with Shift again, and forgets what is gone', () => {
    let sel = toggleSelection([], '1.2.5', false);
    sel = toggleSelection(sel, '1.2.6', true);
    expect(sel).toEqual(['1.2.5', '1.2.6']);
    expect(toggleSelection(sel, '1.2.5', true)).toEqual(['1.2.6']);
    expect(toggleSelection(sel, null, false)).toEqual([]);
    expect(keepSelection(['1.2.5', '9.9.9'], mesh)).toEqual(['1.2.5']);
    const s = selectedElements(mesh, ['1.2.5', '1.2.3', '1.2.8']);
    expect(s.faces.map(elementKey)).toEqual(['1.2.5']);
    expect(s.vertices.map(elementKey)).toEqual(['1.2.3']);
    expect(s.edges.map(elementKey)).toEqual(['1.2.8']);
  });

  it('grabs the vertices of whatever is selected and moves them, snapped with Ctrl', () => {
    expect(selectedVertexIndices(mesh, ['1.2.6'])).toEqual([1, 2, 4]);
    expect(selectedVertexIndices(mesh, ['1.2.0', '1.2.7'])).toEqual([0, 1]);
    expect(grabCommand(7, mesh, [1], [0.1, 0, 0], null)).toEqual({ MoveVertices: { entity: 7, moves: [[k(1), [1.1, 0, 0]]] } });
    expect(grabCommand(7, mesh, [1], [0.1, 0.4, 0], 0.25)).toEqual({ MoveVertices: { entity: 7, moves: [[k(1), [1, 0.5, 0]]] } });
    expect(weldCommand(7, mesh, [1])).toBeNull();
    expect(weldCommand(7, mesh, [2, 4])).toEqual({ Weld: { entity: 7, groups: [[k(2), k(4)]], at_center: true } });
  });

  it('box-selects the elements of the current kind whose screen position is inside', () => {
    // A top view: x → screen x, z → screen y, 100 px per metre.
    const project = (p: [number, number, number]): [number, number] => [p[0] * 100, p[2] * 100];
    const rect = { x0: 120, y0: -10, x1: -10, y1: 110 };
    expect(boxSelect(mesh, 'vertex', project, rect)).toEqual(['1.2.0', '1.2.1', '1.2.2', '1.2.3']);
    expect(boxSelect(mesh, 'face', project, rect)).toEqual(['1.2.5']);
    expect(boxSelect(mesh, 'edge', project, rect)).toEqual(['1.2.7', '1.2.8', '1.2.9', '1.2.10']);
    expect(boxSelect(mesh, 'vertex', () => null, rect)).toEqual([]);
  });

  it('turns and scales the selected vertices about their centre', () => {
    const moved = (c: { MoveVertices?: { moves: [unknown, number[]][] } } | Record<string, unknown>) =>
      ((c as { MoveVertices: { moves: [unknown, number[]][] } }).MoveVertices.moves.map(([, p]) => p.map((x) => Math.round(x * 1000) / 1000)));
    // The quad's corners (0, 1, 2, 3) scaled by 2 about (0.5, 0, 0.5).
    expect(moved(turnOrScaleCommand(7, mesh, [0, 1, 2, 3], { factor: 2 }))).toEqual([
      [-0.5, 0, -0.5], [1.5, 0, -0.5], [1.5, 0, 1.5], [-0.5, 0, 1.5],
    ]);
    // A quarter turn about +Y: (0, 0, 0) → (0, 0, 1) around the centre.
    const turned = moved(turnOrScaleCommand(7, mesh, [0, 1, 2, 3], { angle: Math.PI / 2, axis: [0, 1, 0] }));
    expect(turned[0]).toEqual([0, 0, 1]);
  });

  it('turns mouse travel into an extrude distance, snapped with Ctrl', () => {
    expect(extrudeDistance(100, 0.01, false)).toBe(1);
    expect(extrudeDistance(37, 0.01, true)).toBe(0.25);
    expect(extrudeCommand(7, [k(5)], 0.5, true)).toEqual({
      ExtrudeFaces: { entity: 7, faces: [k(5)], direction: { Normal: { distance_m: 0.5 } }, snap_m: 0.25 },
    });
  });
});

describe('several objects selected', () => {
  it('adds with Shift, makes the last clicked active, and deselects with Shift again', () => {
    let s = clickSelect(null, [], 1, false);
    expect(s).toEqual({ active: 1, also: [] });
    s = clickSelect(s.active, s.also, 2, true);
    expect(s).toEqual({ active: 2, also: [1] });
    s = clickSelect(s.active, s.also, 3, true);
    expect(s).toEqual({ active: 3, also: [1, 2] });
    expect(clickSelect(s.active, s.also, 1, true)).toEqual({ active: 3, also: [2] });
    expect(clickSelect(s.active, s.also, 3, true)).toEqual({ active: 2, also: [1] });
    expect(clickSelect(s.active, s.also, 5, false)).toEqual({ active: 5, also: [] });
    expect(clickSelect(s.active, s.also, null, true)).toEqual({ active: null, also: [] });
  });

  it('moves, turns and scales the others the way the drag changed the active one', () => {
    const from = { translation: [0, 0, 0], rotation: [0, 0, 0, 1], scale: [1, 1, 1] } as const;
    const half = Math.SQRT1_2;
    const to = { translation: [1, 0, 0], rotation: [0, half, 0, half], scale: [2, 2, 2] };
    const other = { translation: [5, 1, 0], rotation: [0, 0, 0, 1], scale: [1, 0.5, 1] };
    const got = sameChange(
      { translation: [...from.translation], rotation: [...from.rotation], scale: [...from.scale] } as never,
      to as never,
      other as never,
    );
    expect(got.translation).toEqual([6, 1, 0]);
    got.rotation.forEach((v, i) => expect(v).toBeCloseTo(to.rotation[i]));
    expect(got.scale).toEqual([2, 1, 2]);
  });
});

describe("others' element selections", () => {
  const id = (index: number) => ({ by: { lamport: 1, author: 2 }, index });
  it('keeps the latest per member, forgets it on leaving edit mode or going quiet', () => {
    let m = applyElementSelection(new Map(), { author: 2, entity: 7, elements: [id(3), id(4)] }, 1000);
    expect(m.get(2)).toEqual({ entity: 7, elements: ['1.2.3', '1.2.4'], at: 1000 });
    m = applyElementSelection(m, { author: 2, entity: 7, elements: [id(5)] }, 1500);
    expect(m.get(2)?.elements).toEqual(['1.2.5']);
    expect(freshElementSelections(m, 1500 + ELEMENT_SELECTION_TTL_MS).size).toBe(1);
    expect(freshElementSelections(m, 1501 + ELEMENT_SELECTION_TTL_MS).size).toBe(0);
    expect(applyElementSelection(m, { author: 2, entity: null, elements: [] }, 1600).size).toBe(0);
  });
});

describe('reconnecting', () => {
  it('backs off from half a second to ten, with jitter around each step', () => {
    expect(reconnectDelayMs(1, 0.5)).toBe(500);
    expect(reconnectDelayMs(2, 0.5)).toBe(1000);
    expect(reconnectDelayMs(5, 0.5)).toBe(8000);
    expect(reconnectDelayMs(9, 0.5)).toBe(10000);
    expect(reconnectDelayMs(1, 0)).toBe(400);
    expect(reconnectDelayMs(1, 1)).toBe(600);
  });
});
