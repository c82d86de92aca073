// @ts-check
// {{name}}: a Trellis route handler. `GET /` answers 200 with JSON built
// from the capabilities its route grants ({{grants_list}}).
import { json, serve } from './trellis.js';
// trellis:if sql
import { sql } from './trellis.js';
// trellis:end
// trellis:if log
import { log } from './trellis.js';
// trellis:end
// trellis:if config
import { config } from './trellis.js';
// trellis:end
// trellis:if cache
import { cache } from './trellis.js';
// trellis:end
// trellis:if metrics
import { metrics } from './trellis.js';
// trellis:end
// trellis:if rate-limit
import { rateLimit } from './trellis.js';
// trellis:end

serve(async (request) => {
  const url = new URL(request.url);
  if (url.pathname !== '/') {
    return json({ error: { code: 'NOT_FOUND', message: 'no such page' } }, { status: 404 });
  }
  /** @type {Record<string, unknown>} */
  const body = { message: 'Hello from {{name}}!' };
  // trellis:if sql
  // Parameters bind as $1, $2, ... on SQLite and PostgreSQL alike.
  const [row] = sql.query('SELECT 1 + $1 AS answer', 41);
  body.answer = row.answer;
  // trellis:end
  // trellis:if config
  // `config = { greeting = "..." }` on the route sets it.
  body.greeting = config.get('greeting') ?? null;
  // trellis:end
  // trellis:if cache
  const visits = Number(cache.getText('visits') ?? '0') + 1;
  cache.setText('visits', String(visits), 60_000);
  body.visits = visits;
  // trellis:end
  // trellis:if rate-limit
  // The `per_client` policy is defined in trellis.toml.
  const decision = rateLimit.check('per_client', 'anonymous');
  if (!decision.allowed) {
    return json({ error: { code: 'RATE_LIMITED', message: 'slow down' } }, { status: 429 });
  }
  body.remaining = decision.remaining;
  // trellis:end
  // trellis:if metrics
  metrics.count('index_requests');
  // trellis:end
  // trellis:if log
  log.info('handled', { path: url.pathname });
  // trellis:end
  return json(body);
});
