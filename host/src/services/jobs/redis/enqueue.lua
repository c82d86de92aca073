-- Enqueues one job. ARGV: id, queue, payload, attempts, run_at, now,
-- trace ('' for none), dedupe key ('' for none), retention ms, tick key
-- ('' unless a schedule fires), registry set, priority.
-- Returns the job's id (the holder's with a held dedupe key), or nil when
-- another host already fired the tick.
local id, queue, payload, attempts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local run_at, now, trace = ARGV[5], ARGV[6], ARGV[7]
local dedupe, retention, tick, registry = ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11]
if tick ~= '' then
  -- One job per schedule tick across hosts: the first SET wins.
  if not redis.call('SET', tick, '1', 'NX', 'PX', 86400000) then
    return false
  end
end
if dedupe ~= '' then
  local holder = redis.call('GET', dedupe)
  if holder then
    return holder
  end
  redis.call('SET', dedupe, id, 'PX', math.max(retention, 1))
end
redis.call('HSET', job_key(id), 'queue', queue, 'payload', payload, 'attempt', 0,
  'attempts', attempts, 'created', now, 'trace', trace, 'priority', ARGV[12])
if tonumber(run_at) > tonumber(now) then
  redis.call('ZADD', delayed, run_at, id)
  redis.call('HSET', job_key(id), 'state', 'delayed')
else
  make_ready(id)
end
redis.call('SADD', registry, queue)
return id
