// The BullMQ peer of benches/jobs.sh.
//
// MODE=drain (default): JOBS no-op jobs added to a fresh queue (addBulk,
// 1000 at a time), then one Worker processes them at CONCURRENCY. Prints
// one JSON line: jobs, enqueue_ms, process_ms (from the first completion
// to the last), jobs_per_s, cpu_us_per_job (this process, while
// processing), redis_cpu_us_per_job (the redis-server of REDIS_PID, over
// the same span; null without REDIS_PID), and the enqueue→done latency
// (job.finishedOn - job.timestamp) p50_ms and p99_ms.
//
// MODE=steady: the Worker runs while produce.js (started with PRODUCER,
// a command prefix such as `taskset -c 1`) adds RATE jobs a second for
// DURATION seconds; prints jobs, the producer's line and p50_ms/p99_ms.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Queue, Worker } from 'bullmq';

const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  maxRetriesPerRequest: null,
};
const mode = process.env.MODE || 'drain';
const concurrency = Number(process.env.CONCURRENCY || 8);
const name = `trellis-bench-${process.pid}`;
const redisPid = process.env.REDIS_PID;

// CPU ticks (user + system) of the Redis server so far.
const redisTicks = () => {
  if (!redisPid) return 0;
  const fields = readFileSync(`/proc/${redisPid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
};

// The p-th percentile (nearest rank) of `values`, sorted in place.
const percentile = (values, p) => {
  values.sort((a, b) => a - b);
  return values[Math.max(0, Math.ceil(p * values.length) - 1)];
};

const queue = new Queue(name, { connection });
await queue.waitUntilReady();
let jobs = mode === 'drain' ? Number(process.env.JOBS || 50000) : Infinity;
let producer = null;
let enqueueMs = 0;
if (mode === 'drain') {
  const started = Date.now();
  for (let i = 0; i < jobs; i += 1000) {
    const batch = Array.from({ length: Math.min(1000, jobs - i) }, () => ({
      name: 'noop',
      data: 'noop',
      opts: { removeOnComplete: true },
    }));
    await queue.addBulk(batch);
  }
  enqueueMs = Date.now() - started;
}

let done = 0;
let first = 0;
let cpu;
let redisBefore = 0;
const latencies = [];
let finish;
const finished = new Promise((resolve) => {
  finish = resolve;
});
const worker = new Worker(name, async () => {}, { connection, concurrency });
worker.on('completed', (job) => {
  if (!first) {
    first = Date.now();
    cpu = process.cpuUsage();
    redisBefore = redisTicks();
  }
  latencies.push(job.finishedOn - job.timestamp);
  done += 1;
  if (done === jobs) finish();
});
if (mode === 'steady') {
  await worker.waitUntilReady();
  const prefix = (process.env.PRODUCER || '').split(' ').filter(Boolean);
  const argv = [...prefix, process.execPath, new URL('./produce.js', import.meta.url).pathname];
  const child = spawn(argv[0], argv.slice(1), {
    env: { ...process.env, TARGET: `bullmq:${name}` },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  await new Promise((resolve) => child.on('exit', resolve));
  producer = JSON.parse(out);
  jobs = producer.sent;
  if (done >= jobs) finish();
}
await finished;
const processMs = Date.now() - first;
const used = process.cpuUsage(cpu);
const redisUsed = redisTicks() - redisBefore;
const line = {
  jobs,
  p50_ms: percentile(latencies, 0.5),
  p99_ms: percentile(latencies, 0.99),
};
if (mode === 'drain') {
  Object.assign(line, {
    enqueue_ms: enqueueMs,
    process_ms: processMs,
    jobs_per_s: Math.round((jobs * 1000) / processMs),
    cpu_us_per_job: Number(((used.user + used.system) / jobs).toFixed(1)),
    // Ticks are 10 ms (CLK_TCK 100).
    redis_cpu_us_per_job: redisPid ? Number(((redisUsed * 10000) / jobs).toFixed(1)) : null,
  });
} else {
  line.producer = producer;
}
console.log(JSON.stringify(line));
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
