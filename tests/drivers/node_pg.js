// Scenario j: node-postgres (`pg`) through sleddog, compared with plain Postgres.
//
//   basic:    simple and multi-statement queries, parameterised (unnamed) queries,
//             an error then recovery, a rolled-back transaction.
//   prepared: a named prepared statement ({name, text, values}), which pg parses
//             once per connection and then only binds, used in and outside
//             transactions by 4 clients x 25 transactions on a pool of 2.
//
// Connection info from SD_HOST, SD_PROXY_PORT, SD_DIRECT_PORT, SD_USER,
// SD_PASSWORD, SD_DATABASE; exits 1 with a line starting FAIL on any mismatch.
'use strict';

const assert = require('node:assert');
const { Client } = require('pg');

const TARGETS = [
  ['direct', Number(process.env.SD_DIRECT_PORT)],
  ['sleddog', Number(process.env.SD_PROXY_PORT)],
];

function client(port) {
  return new Client({
    host: process.env.SD_HOST || '127.0.0.1',
    port,
    user: process.env.SD_USER,
    password: process.env.SD_PASSWORD,
    database: process.env.SD_DATABASE,
    connectionTimeoutMillis: 10000,
  });
}

async function outcome(promise) {
  try {
    const result = await promise;
    return { rows: result.rows };
  } catch (error) {
    return { error: error.code || String(error) };
  }
}

async function basic(port) {
  const c = client(port);
  await c.connect();
  const seen = [];
  try {
    seen.push(await outcome(c.query('select 1::int as a, $$x$$::text as b')));
    const multi = await c.query('select 1 as one; select 2 as two');
    seen.push(multi.map((r) => r.rows));
    seen.push(await outcome(c.query('select $1::int + 1 as n, $2::text as s', [41, 'hi'])));
    seen.push(await outcome(c.query('select 1 / 0')));
    seen.push(await outcome(c.query('select $1::int * 2 as n', [21])));
    await c.query('begin');
    seen.push(await outcome(c.query('select nonexistent_column')));
    seen.push(await outcome(c.query('select 1')));
    await c.query('rollback');
    seen.push(await outcome(c.query('select generate_series(1, $1::int) as g', [3])));
  } finally {
    await c.end();
  }
  assert.deepStrictEqual(seen[0], { rows: [{ a: 1, b: 'x' }] });
  assert.deepStrictEqual(seen[2], { rows: [{ n: 42, s: 'hi' }] });
  assert.deepStrictEqual(seen[3], { error: '22012' });
  assert.deepStrictEqual(seen[4], { rows: [{ n: 42 }] });
  assert.deepStrictEqual(seen[5], { error: '42703' });
  assert.deepStrictEqual(seen[6], { error: '25P02' });
  return seen;
}

const CLIENTS = 4;
const TRANSACTIONS = 25;

async function preparedClient(port, idx) {
  const c = client(port);
  await c.connect();
  const seen = [];
  try {
    const query = (n) => ({ name: 'x', text: 'select $1::int * 2 + $2::int as n', values: [n, idx] });
    // Parsed here, outside a transaction; bound by name from then on.
    seen.push((await c.query(query(-1))).rows[0].n);
    for (let t = 0; t < TRANSACTIONS; t++) {
      await c.query('begin');
      seen.push((await c.query(query(t))).rows[0].n);
      await c.query('commit');
      seen.push((await c.query(query(t + 1000))).rows[0].n);
    }
  } finally {
    await c.end();
  }
  const want = [-2 + idx];
  for (let t = 0; t < TRANSACTIONS; t++) want.push(t * 2 + idx, (t + 1000) * 2 + idx);
  assert.deepStrictEqual(seen, want, `client ${idx} results`);
  return seen;
}

async function prepared(port) {
  const all = [];
  for (let i = 0; i < CLIENTS; i++) all.push(preparedClient(port, i));
  return Promise.all(all);
}

async function main() {
  const mode = process.argv[2] || 'basic';
  const step = { basic, prepared }[mode];
  if (!step) throw new Error(`unknown mode ${mode} (basic or prepared)`);
  const seen = {};
  for (const [target, port] of TARGETS) {
    console.log(`-- ${target}`);
    try {
      seen[target] = await step(port);
    } catch (error) {
      throw new Error(`[${target}] ${error.code ? `SQLSTATE ${error.code}: ` : ''}${error.message}`);
    }
  }
  try {
    assert.deepStrictEqual(seen.sleddog, seen.direct);
  } catch (error) {
    throw new Error(`results differ through sleddog and directly to Postgres:\n${error.message}`);
  }
  console.log('ok');
}

main().catch((error) => {
  console.error(`FAIL: ${error.message}`);
  process.exit(1);
});
