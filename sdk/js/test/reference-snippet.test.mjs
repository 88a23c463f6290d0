// The reference's "SDK Examples" JavaScript snippet, run as written with only its serials changed (plus its
// placeholder address and token). It is written into this package's folder so that the bare specifier
// '@enabledrm/sdk' resolves through the package's own "exports" (what `npm install ./sdk/js` gives a user).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { before, describe, it } from 'node:test';
import { BASE_URL, adminClient, seed } from '../test-support/live.mjs';

const run = promisify(execFile);
// shared/ lies beside every checkout of the repository (this file is sdk/js/test/ in it)
const REFERENCE = new URL('../../../../shared/api-reference.md', import.meta.url);

export const JS_SNIPPET = `import { EnableDRMClient } from '@enabledrm/sdk';

const client = new EnableDRMClient({
  baseURL: 'http://localhost:8000',
  token: 'your_jwt_token'
});

// Get execution by serial
const execution = await client.executions.getBySerial('J20250001.0001');
console.log(\`Status: \${execution.status}\`);

// Get target performance
const performance = await client.targets.getPerformance('T20250001', { days: 30 });
console.log(\`Success rate: \${performance.successRate}%\`);
`;

describe('reference JavaScript snippet', () => {
  it('is the reference verbatim', (t) => {
    assert.ok(existsSync(REFERENCE), `${REFERENCE} not found: shared/ should lie beside the checkout`);
    const text = readFileSync(REFERENCE, 'utf8');
    const block = text.split('### JavaScript SDK\n```javascript\n')[1].split('```')[0];
    assert.equal(block, JS_SNIPPET);
  });

  describe('against the live server', () => {
    let admin;
    let seeded;
    before(async () => {
      admin = await adminClient();
      seeded = await seed(admin, 'js-snippet');
    });

    it('runs with only the serials changed', async () => {
      const code = JS_SNIPPET
        .replace("'J20250001.0001'", `'${seeded.execution.executionSerial}'`)
        .replace("'T20250001'", `'${seeded.target.targetSerial}'`)
        .replace("'http://localhost:8000'", `'${BASE_URL.replace('127.0.0.1', 'localhost')}'`)
        .replace("'your_jwt_token'", `'${admin.token}'`);
      assert.equal(code.split('\n').length, JS_SNIPPET.split('\n').length);
      const dir = new URL('../.tmp/', import.meta.url);
      mkdirSync(dir, { recursive: true });
      const file = new URL(`snippet-${process.pid}.mjs`, dir);
      writeFileSync(file, code);
      try {
        const { stdout } = await run(process.execPath, [file.pathname], { timeout: 30000 });
        assert.deepEqual(stdout.trim().split('\n'), ['Status: completed', 'Success rate: 100%']);
      } finally {
        rmSync(file, { force: true });
      }
    });
  });
});
