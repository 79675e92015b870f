// Runs the Khronos glTF-Validator (npm `gltf-validator`) on each file given (.glb, or .gltf with
// its external buffers beside it) and prints one JSON line:
// {"files": [{"file", "errors", "warnings", "infos", "messages": [...errors and warnings]}]}.
// Exits non-zero only when a file cannot be read or validated at all; the caller judges counts.
import { readFile } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import validator from 'gltf-validator';

const files = process.argv.slice(2);
const results = [];
for (const file of files) {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, {
    uri: basename(file),
    maxIssues: 50,
    externalResourceFunction: async (uri) =>
      new Uint8Array(await readFile(join(dirname(file), decodeURIComponent(uri)))),
  });
  const { numErrors, numWarnings, numInfos, messages } = report.issues;
  results.push({
    file: basename(file),
    errors: numErrors,
    warnings: numWarnings,
    infos: numInfos,
    messages: messages
      .filter((m) => m.severity <= 1)
      .map((m) => `${m.code} ${m.pointer ?? ''}: ${m.message}`),
  });
}
console.log(JSON.stringify({ files: results }));
