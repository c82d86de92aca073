'use strict';
// Express peer for benches/outbound.sh: GET /out calls the upstream's
// /hello with Node's built-in fetch (undici, keep-alive pooled) and answers
// with its status and body, as the Trellis route's guest does. One Node.js
// process; listens on 127.0.0.1:$PORT (default 8098); the upstream is
// $UPSTREAM (default http://127.0.0.1:8096).

const express = require('express');

const PORT = Number.parseInt(process.env.PORT || '8098', 10);
const HOST = process.env.HOST || '127.0.0.1';
const UPSTREAM = process.env.UPSTREAM || 'http://127.0.0.1:8096';

const app = express();

app.get('/out', async (_req, res) => {
  try {
    const upstream = await fetch(`${UPSTREAM}/hello`, { signal: AbortSignal.timeout(5000) });
    const body = Buffer.from(await upstream.arrayBuffer());
    res.status(200).set('x-upstream-status', String(upstream.status)).type('text/plain').send(body);
  } catch (err) {
    res.status(502).type('text/plain').send(String(err && err.name));
  }
});

const server = app.listen(PORT, HOST, () => {
  console.error(`express-outbound listening on http://${HOST}:${PORT} -> ${UPSTREAM} (node ${process.version})`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
