import { defineConfig } from 'vitest/config';

// The daemon serves dist/ from its own origin; the Tauri shell loads it too.
export default defineConfig({
  base: '/',
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', sourcemap: false },
  test: { environment: 'node', include: ['src/**/*.test.ts'] },
});
