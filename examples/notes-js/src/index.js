// @ts-check
// Notes: `POST /notes` with `{"text": "..."}` adds one, `GET /notes` lists
// them, on whichever database the host runs (SQLite or PostgreSQL).
import { json, log, serve, sql } from './trellis.js';

serve(async (request) => {
  if (request.method === 'POST') {
    /** @type {unknown} */
    let body;
    try {
      body = await request.json();
    } catch {
      return error(400, 'BAD_REQUEST', 'the body is not JSON');
    }
    const text = /** @type {{ text?: unknown }} */ (body ?? {}).text;
    if (typeof text !== 'string' || text.length === 0) {
      return error(400, 'VALIDATION', '`text` must be a non-empty string');
    }
    sql.execute('INSERT INTO notes (text) VALUES ($1)', text);
    log.info('note added', { length: text.length });
    return json({ text }, { status: 201 });
  }
  const notes = sql.query('SELECT text FROM notes ORDER BY text').map((row) => row.text);
  return json({ notes });
});

/**
 * @param {number} status
 * @param {string} code
 * @param {string} message
 */
function error(status, code, message) {
  return json({ error: { code, message } }, { status });
}
