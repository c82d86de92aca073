// @ts-check
// Helpers for a Trellis handler over the raw `trellis:api` bindings, which
// stay importable as they are ('trellis:api/sql@0.1.0', ...). Their types
// are in types/generated (`npm run types`, run by `trellis build`).
//
// This file imports only the interfaces the world in wit/world.wit takes:
// componentize-js refuses an import the world does not name. `trellis wit
// --grants ...` rewrites it with the world, so keep your code elsewhere.
// trellis:if sql
import * as rawSql from 'trellis:api/sql@0.1.0';
// trellis:end
// trellis:if log
import * as rawLog from 'trellis:api/log@0.1.0';
// trellis:end
// trellis:if config
import * as rawConfig from 'trellis:api/config@0.1.0';
// trellis:end
// trellis:if cache
import * as rawCache from 'trellis:api/cache@0.1.0';
// trellis:end
// trellis:if metrics
import * as rawMetrics from 'trellis:api/metrics@0.1.0';
// trellis:end
// trellis:if rate-limit
import * as rawRateLimit from 'trellis:api/rate-limit@0.1.0';
// trellis:end

/** @typedef {(request: Request) => Response | Promise<Response>} Handler */

/**
 * Serves `handler` as the component's `wasi:http/incoming-handler`
 * (StarlingMonkey's fetch event). A thrown error answers 500 with the
 * host's JSON error shape; its cause goes to stderr, which the host logs.
 * @param {Handler} handler
 */
export function serve(handler) {
  addEventListener('fetch', (event) => {
    const fetchEvent = /** @type {Event & { request: Request, respondWith(r: Promise<Response>): void }} */ (event);
    fetchEvent.respondWith(answer(handler, fetchEvent.request));
  });
}

/**
 * @param {Handler} handler
 * @param {Request} request
 * @returns {Promise<Response>}
 */
async function answer(handler, request) {
  try {
    return await handler(request);
  } catch (error) {
    console.error('handler failed:', error instanceof Error ? error.stack ?? error.message : error);
    return json({ error: { code: 'INTERNAL', message: 'internal error' } }, { status: 500 });
  }
}

/**
 * A JSON response.
 * @param {unknown} value
 * @param {ResponseInit} [init]
 * @returns {Response}
 */
export function json(value, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('content-type', 'application/json');
  return new Response(JSON.stringify(value), { ...init, headers });
}
// trellis:if sql

/** @typedef {null | boolean | number | bigint | string | Uint8Array} SqlParam */

/**
 * `trellis:api/sql`: parameterized SQL on the host's pool. Integers come
 * back as numbers (bigint beyond 2^53). A failed statement throws the
 * WIT error (its `payload` is `{ tag: 'conflict', ... }` and so on).
 */
export const sql = {
  /**
   * The rows of `statement`, each an object keyed by column name.
   * @param {string} statement
   * @param {...SqlParam} params
   * @returns {Array<Record<string, SqlParam>>}
   */
  query(statement, ...params) {
    const result = rawSql.query(statement, params.map(toValue));
    return result.rows.map((row) =>
      Object.fromEntries(result.columns.map((name, i) => [name, fromValue(row[i])])),
    );
  },
  /**
   * Runs `statement`; the number of rows affected.
   * @param {string} statement
   * @param {...SqlParam} params
   * @returns {number}
   */
  execute(statement, ...params) {
    return Number(rawSql.execute(statement, params.map(toValue)));
  },
};

/**
 * @param {SqlParam} value
 * @returns {rawSql.Value}
 */
function toValue(value) {
  if (value === null || value === undefined) return { tag: 'null' };
  if (typeof value === 'boolean') return { tag: 'boolean', val: value };
  if (typeof value === 'bigint') return { tag: 'int', val: value };
  if (typeof value === 'number') {
    return Number.isInteger(value) ? { tag: 'int', val: BigInt(value) } : { tag: 'float', val: value };
  }
  if (value instanceof Uint8Array) return { tag: 'blob', val: value };
  return { tag: 'text', val: String(value) };
}

/**
 * @param {rawSql.Value} value
 * @returns {SqlParam}
 */
function fromValue(value) {
  switch (value.tag) {
    case 'null':
      return null;
    case 'int':
      return value.val >= BigInt(Number.MIN_SAFE_INTEGER) && value.val <= BigInt(Number.MAX_SAFE_INTEGER)
        ? Number(value.val)
        : value.val;
    default:
      return value.val;
  }
}
// trellis:end
// trellis:if log

/**
 * `trellis:api/log`: structured records in the host's log, tagged with the
 * route and the request id. Records the host would drop are not built.
 */
export const log = {
  /** @param {string} message @param {Record<string, unknown>} [fields] */
  debug: (message, fields) => write('debug', message, fields),
  /** @param {string} message @param {Record<string, unknown>} [fields] */
  info: (message, fields) => write('info', message, fields),
  /** @param {string} message @param {Record<string, unknown>} [fields] */
  warn: (message, fields) => write('warn', message, fields),
  /** @param {string} message @param {Record<string, unknown>} [fields] */
  error: (message, fields) => write('error', message, fields),
};

/**
 * @param {rawLog.Level} level
 * @param {string} message
 * @param {Record<string, unknown>} [fields]
 */
function write(level, message, fields = {}) {
  if (!rawLog.enabled(level)) return;
  /** @type {Array<[string, string]>} */
  const pairs = Object.entries(fields).map(([key, value]) => [key, String(value)]);
  rawLog.write(level, message, pairs);
}
// trellis:end
// trellis:if config

/** `trellis:api/config`: the route's variables and secrets. */
export const config = {
  /**
   * @param {string} key
   * @returns {string | undefined}
   */
  get: (key) => rawConfig.get(key),
};
// trellis:end
// trellis:if cache

/** `trellis:api/cache`: the host's tiered cache, in the route's namespace. */
export const cache = {
  /**
   * @param {string} key
   * @returns {string | undefined}
   */
  getText(key) {
    const bytes = rawCache.get(key);
    return bytes === undefined ? undefined : new TextDecoder().decode(bytes);
  },
  /**
   * @param {string} key
   * @param {string} value
   * @param {number} ttlMs
   */
  setText(key, value, ttlMs) {
    rawCache.set(key, new TextEncoder().encode(value), BigInt(ttlMs));
  },
  /**
   * @param {string} key
   * @returns {boolean}
   */
  delete: (key) => rawCache.delete(key),
};
// trellis:end
// trellis:if metrics

/** `trellis:api/metrics`: counters and histograms on the host's /metrics. */
export const metrics = {
  /**
   * @param {string} name
   * @param {number} [value]
   * @param {Record<string, string>} [labels]
   */
  count(name, value = 1, labels = {}) {
    rawMetrics.counterAdd(name, BigInt(value), Object.entries(labels));
  },
  /**
   * @param {string} name
   * @param {number} value
   * @param {Record<string, string>} [labels]
   */
  observe(name, value, labels = {}) {
    rawMetrics.histogramObserve(name, value, Object.entries(labels));
  },
};
// trellis:end
// trellis:if rate-limit

/** `trellis:api/rate-limit`: the manifest's named policies, keyed by the guest. */
export const rateLimit = {
  /**
   * @param {string} policy
   * @param {string} key
   * @returns {rawRateLimit.Decision}
   */
  check: (policy, key) => rawRateLimit.check(policy, key),
};
// trellis:end
