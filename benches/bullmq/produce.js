// A steady producer for benches/jobs.sh's latency phase: RATE jobs a
// second for DURATION seconds, paced every 10 ms, with at most 64 in
// flight. TARGET is either an HTTP URL (Trellis: one POST of `noop` per
// job, over keep-alive connections) or `bullmq:<queue>` (queue.add).
// Prints one JSON line: sent, seconds, late (ticks that found 64 in flight).
import http from 'node:http';

const target = process.env.TARGET;
const rate = Number(process.env.RATE || 1000);
const duration = Number(process.env.DURATION || 10);
const total = Math.round(rate * duration);

let send;
let close = async () => {};
if (target.startsWith('bullmq:')) {
  const { Queue } = await import('bullmq');
  const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
  const queue = new Queue(target.slice('bullmq:'.length), {
    connection: { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null },
  });
  await queue.waitUntilReady();
  send = () => queue.add('noop', 'noop', { removeOnComplete: true });
  close = () => queue.close();
} else {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  send = () =>
    new Promise((resolve, reject) => {
      const req = http.request(target, { method: 'POST', agent }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end('noop');
    });
  close = async () => agent.destroy();
}

let sent = 0;
let inFlight = 0;
let late = 0;
const started = Date.now();
await new Promise((resolve, reject) => {
  const tick = setInterval(() => {
    const due = Math.min(total, Math.round(((Date.now() - started) / 1000) * rate));
    while (sent < due) {
      if (inFlight >= 64) {
        late += 1;
        break;
      }
      sent += 1;
      inFlight += 1;
      send().then(() => {
        inFlight -= 1;
        if (sent === total && inFlight === 0) {
          clearInterval(tick);
          resolve();
        }
      }, reject);
    }
  }, 10);
});
console.log(JSON.stringify({ sent, seconds: (Date.now() - started) / 1000, late }));
await close();
