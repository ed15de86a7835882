// Bundles the demo editor (demo/, issue 18) into dist/demo/editor.js and dist/demo/editor.css with
// esbuild: ProseMirror, y-prosemirror, Yjs and the Hocuspocus provider are devDependencies,
// inlined here, so neither the package nor the image needs them at run time and the page loads
// nothing from another origin. Fixed file names: server/demo-page.ts serves them with no-cache.
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))

await build({
  absWorkingDir: root,
  entryPoints: { editor: 'demo/editor.ts' },
  outdir: 'dist/demo',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
})
await build({
  absWorkingDir: root,
  entryPoints: { editor: 'demo/editor.css' },
  outdir: 'dist/demo',
  bundle: true,
  minify: true,
  logLevel: 'warning',
})
