import { defineConfig } from 'vite';

// The server serves `dist/` at `/`; the API is same-origin. For `npm run dev`, point the proxy
// at a running server (default 127.0.0.1:8080).
const api = process.env.MESHWORK_HTTP ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: './',
  build: { outDir: 'dist', target: 'es2022', chunkSizeWarningLimit: 2048 },
  server: { proxy: { '/api': { target: api, ws: true } } },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});
