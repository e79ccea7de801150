// Builds dist/convtrack.js (one minified file, no runtime dependencies) and
// copies it where the collector serves it from. Usage: node build.mjs [outfile]
import { build } from 'esbuild';
import { readFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { version } = JSON.parse(readFileSync(resolve(here, 'package.json'), 'utf8'));
const dist = resolve(here, 'dist/convtrack.js');
const served = resolve(process.argv[2] || resolve(here, '../../src/convtrack/collect/sdk/convtrack.js'));

await build({
  entryPoints: [resolve(here, 'src/index.js')],
  outfile: dist,
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2017'],
  legalComments: 'none',
  banner: { js: `/* convtrack.js ${version} | Apache-2.0 */` },
  define: { __CONVTRACK_VERSION__: JSON.stringify(version) },
  logLevel: 'warning',
});
mkdirSync(dirname(served), { recursive: true });
copyFileSync(dist, served);
const bytes = readFileSync(dist);
console.log(`convtrack.js ${version}: ${bytes.length} bytes, ${gzipSync(bytes).length} gzipped -> ${served}`);
