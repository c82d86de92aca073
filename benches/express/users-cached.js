'use strict';
// Express + pg + redis peer for the cached read benchmark in benches/run.sh:
// the same work as the `users` component's `GET /users/{id}` with its route
// config `cache_ttl_ms` set — read-through caching of the user's JSON in the
// same Redis:
//   GET user:<id> from Redis; on a hit answer it as it is; on a miss run
//   `SELECT id, name, email, created_at FROM users WHERE id = $1` on the pg
//   pool, answer the JSON and SET it in Redis with a TTL.
//
// One Node.js process (no cluster). Settings (environment):
//   PORT          listen port on $HOST (default 127.0.0.1:8087)
//   DATABASE_URL  as for users.js
//   REDIS_URL     default redis://127.0.0.1:6379
//   POOL_MAX      pg Pool size (default 20)
//   TTL_S         cache TTL in seconds (default 60)

const express = require('express');
const { Pool } = require('pg');
const { createClient } = require('redis');

const PORT = Number.parseInt(process.env.PORT || '8087', 10);
const HOST = process.env.HOST || '127.0.0.1';
const DATABASE_URL = process.env.DATABASE_URL ||
  'postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dtrellis_bench';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const POOL_MAX = Number.parseInt(process.env.POOL_MAX || '20', 10);
const TTL_S = Number.parseInt(process.env.TTL_S || '60', 10);
const PREFIX = process.env.KEY_PREFIX || 'bench-express:user:';

const pool = new Pool({ connectionString: DATABASE_URL, max: POOL_MAX });
pool.on('error', (err) => console.error('pg pool: idle client error:', err.message));
const redis = createClient({ url: REDIS_URL });
redis.on('error', (err) => console.error('redis:', err.message));

const USER_BY_ID = {
  name: 'user-by-id',
  text: 'SELECT id, name, email, created_at FROM users WHERE id = $1',
};

const app = express();

app.get('/users/:id', async (req, res) => {
  const { id } = req.params;
  if (!/^[0-9]{1,18}$/.test(id)) {
    res.status(400).json({ error: { code: 'BAD_REQUEST', message: 'id must be a positive integer' } });
    return;
  }
  const key = PREFIX + id;
  const cached = await redis.get(key);
  if (cached !== null) {
    res.type('application/json').send(cached);
    return;
  }
  const { rows } = await pool.query({ ...USER_BY_ID, values: [id] });
  if (rows.length === 0) {
    res.status(404).json({ error: { code: 'NOT_FOUND', message: `no user ${id}` } });
    return;
  }
  const user = rows[0];
  const body = JSON.stringify({ id: Number(user.id), name: user.name, email: user.email, created_at: user.created_at });
  await redis.set(key, body, { EX: TTL_S });
  res.type('application/json').send(body);
});

app.use((err, _req, res, _next) => {
  console.error('GET /users/:id failed:', err.message);
  res.status(500).json({ error: { code: 'INTERNAL', message: 'internal error' } });
});

redis.connect().then(() => {
  const server = app.listen(PORT, HOST, () => {
    console.error(`express-users-cached listening on http://${HOST}:${PORT} (node ${process.version}, pid ${process.pid}, single process, pg pool max ${POOL_MAX}, redis ${REDIS_URL})`);
  });
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => server.close(() => Promise.allSettled([pool.end(), redis.quit()]).finally(() => process.exit(0))));
  }
});
