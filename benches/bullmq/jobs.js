// The BullMQ peer of benches/jobs.sh: JOBS no-op jobs added to a fresh
// queue (addBulk, 1000 at a time), then one Worker processes them at
// CONCURRENCY. Prints one JSON line: jobs, enqueue_ms, process_ms (from the
// first completion to the last), jobs_per_s and cpu_us_per_job (this
// process, while processing).
import { Queue, Worker } from 'bullmq';

const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  maxRetriesPerRequest: null,
};
const jobs = Number(process.env.JOBS || 50000);
const concurrency = Number(process.env.CONCURRENCY || 8);
const name = `trellis-bench-${process.pid}`;

const queue = new Queue(name, { connection });
let started = Date.now();
for (let i = 0; i < jobs; i += 1000) {
  const batch = Array.from({ length: Math.min(1000, jobs - i) }, () => ({
    name: 'noop',
    data: 'noop',
    opts: { removeOnComplete: true },
  }));
  await queue.addBulk(batch);
}
const enqueueMs = Date.now() - started;

let done = 0;
let first = 0;
let cpu;
const finished = new Promise((resolve) => {
  const worker = new Worker(name, async () => {}, { connection, concurrency });
  worker.on('completed', () => {
    if (!first) {
      first = Date.now();
      cpu = process.cpuUsage();
    }
    done += 1;
    if (done === jobs) resolve(worker);
  });
});
const worker = await finished;
const processMs = Date.now() - first;
const used = process.cpuUsage(cpu);
console.log(
  JSON.stringify({
    jobs,
    enqueue_ms: enqueueMs,
    process_ms: processMs,
    jobs_per_s: Math.round((jobs * 1000) / processMs),
    cpu_us_per_job: Number(((used.user + used.system) / jobs).toFixed(1)),
  }),
);
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
