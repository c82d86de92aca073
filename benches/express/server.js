'use strict';
// Express peer for benches/run.sh: the same response as the `hello`
// component (200, text/plain, "Hello, world!\n"), written the way an Express
// user would write it. One Node.js process (no cluster), as Express is
// usually run; listens on 127.0.0.1:$PORT (default 8083).

const express = require('express');

const BODY = 'Hello, world!\n';
const PORT = Number.parseInt(process.env.PORT || '8083', 10);
const HOST = process.env.HOST || '127.0.0.1';

const app = express();

app.get('/hello', (_req, res) => {
  res.type('text/plain').send(BODY);
});

const server = app.listen(PORT, HOST, () => {
  console.error(`express-hello listening on http://${HOST}:${PORT} (node ${process.version}, pid ${process.pid}, single process)`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
