'use strict';
// Express + pg peer for the SQL read benchmark in benches/run.sh: the same
// work as the `users` component's `GET /users/{id}` — one parameterized
// `SELECT id, name, email, created_at FROM users WHERE id = $1` on a pooled
// PostgreSQL connection, answered as
//   {"id":1,"name":"..","email":"..","created_at":".."}   (200, application/json)
// or a JSON error (400 for a non-numeric id, 404 for a missing row).
//
// One Node.js process (no cluster), as Express is usually run. Settings
// (environment):
//   PORT          listen port on $HOST (default 127.0.0.1:8085)
//   DATABASE_URL  the same URL Trellis gets; its `options=-csearch_path%3D...`
//                 parameter selects the benchmark schema (pg-connection-string
//                 passes `options` to the server at connect time, as sqlx does)
//   POOL_MAX      pg Pool size (default 20, Trellis's `max_connections` in the
//                 benchmark manifest)

const express = require('express');
const { Pool } = require('pg');

const PORT = Number.parseInt(process.env.PORT || '8085', 10);
const HOST = process.env.HOST || '127.0.0.1';
const DATABASE_URL = process.env.DATABASE_URL ||
  'postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dtrellis_bench';
const POOL_MAX = Number.parseInt(process.env.POOL_MAX || '20', 10);

const pool = new Pool({ connectionString: DATABASE_URL, max: POOL_MAX });
pool.on('error', (err) => console.error('pg pool: idle client error:', err.message));

// A named statement is prepared once per pooled connection and then only
// bound and executed, as sqlx's per-connection statement cache does for
// Trellis.
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
  const { rows } = await pool.query({ ...USER_BY_ID, values: [id] });
  if (rows.length === 0) {
    res.status(404).json({ error: { code: 'NOT_FOUND', message: `no user ${id}` } });
    return;
  }
  const user = rows[0];
  // BIGINT arrives as a string (pg's default, to keep 64-bit precision); the
  // ids here fit a JS number, as in the component's JSON. TIMESTAMPTZ
  // arrives as a Date and serializes as ISO 8601 in UTC.
  res.json({ id: Number(user.id), name: user.name, email: user.email, created_at: user.created_at });
});

// Express 5 passes a rejected promise (e.g. a pg error) here.
app.use((err, _req, res, _next) => {
  console.error('GET /users/:id failed:', err.message);
  res.status(500).json({ error: { code: 'INTERNAL', message: 'internal error' } });
});

const server = app.listen(PORT, HOST, () => {
  console.error(`express-users listening on http://${HOST}:${PORT} (node ${process.version}, pid ${process.pid}, single process, pg pool max ${POOL_MAX})`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => server.close(() => pool.end().finally(() => process.exit(0))));
}
