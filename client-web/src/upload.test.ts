import { describe, expect, it } from 'vitest';
import { UploadRefused, fromHex, packGltf, toHex } from './upload';

const gltf = (doc: object) => new File([JSON.stringify(doc)], 'scene.gltf');

describe('packing a .gltf for upload', () => {
  const doc = {
    asset: { version: '2.0' },
    buffers: [
      { uri: 'a%20b.bin', byteLength: 6 },
      { uri: `data:application/octet-stream;base64,${btoa('\x09\x08\x07\x06')}`, byteLength: 4 },
    ],
    bufferViews: [
      { buffer: 0, byteOffset: 2, byteLength: 4 },
      { buffer: 1, byteLength: 4 },
    ],
  };
  const bin = new File([new Uint8Array([1, 2, 3, 4, 5, 6])], 'a b.bin');

  it('moves every buffer into one binary chunk and re-points the views', async () => {
    const { name, bytes } = await packGltf([bin, gltf(doc)]);
    expect(name).toBe('scene.gltf');
    const view = new DataView(bytes.buffer);
    expect(new TextDecoder().decode(bytes.subarray(0, 4))).toBe('glTF');
    expect(view.getUint32(4, true)).toBe(2);
    expect(view.getUint32(8, true)).toBe(bytes.length);
    const jsonLength = view.getUint32(12, true);
    expect(jsonLength % 4).toBe(0);
    const json = JSON.parse(new TextDecoder().decode(bytes.subarray(20, 20 + jsonLength)));
    // 6 bytes, 2 of padding to a 4-byte boundary, then the 4 of the data URI.
    expect(json.buffers).toEqual([{ byteLength: 12 }]);
    expect(json.bufferViews.map((v: { buffer: number; byteOffset: number }) => [v.buffer, v.byteOffset])).toEqual([
      [0, 2],
      [0, 8],
    ]);
    const binAt = 20 + jsonLength;
    expect(view.getUint32(binAt + 4, true)).toBe(0x004e4942);
    const chunk = bytes.subarray(binAt + 8, binAt + 8 + 12);
    expect([...chunk]).toEqual([1, 2, 3, 4, 5, 6, 0, 0, 9, 8, 7, 6]);
  });

  it('names the file it lacks, and passes a .glb through', async () => {
    await expect(packGltf([gltf(doc)])).rejects.toThrow(UploadRefused);
    await expect(packGltf([gltf(doc)])).rejects.toThrow(/a b\.bin/);
    const glb = new File([new Uint8Array([0x67, 0x6c, 0x54, 0x46, 2, 0, 0, 0])], 'x.glb');
    expect([...(await packGltf([glb])).bytes]).toEqual([0x67, 0x6c, 0x54, 0x46, 2, 0, 0, 0]);
  });

  it('writes asset ids as hex and back', () => {
    expect(fromHex(toHex(new Uint8Array([0, 15, 255])))).toEqual([0, 15, 255]);
  });
});
