// The shipped declarations (src/index.d.ts) type-check the API as the
// README uses it: test/types-check.ts compiled with the typescript
// devDependency (tsc --noEmit).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';

test('index.d.ts type-checks the documented API', () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const root = new URL('..', import.meta.url).pathname;
  const out = execFileSync(process.execPath, [tsc, '-p', root], { encoding: 'utf8' });
  assert.equal(out.trim(), '');
});
