-- Fails attempt ARGV[2] of job ARGV[1] with error ARGV[3]: retried at
-- ARGV[4] (ms), or dead-lettered at ARGV[5] after its last attempt.
-- Returns 'retry', 'dead', or 'lost' (no longer leased under that attempt).
local id, attempt, err, retry_at, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = job_key(id)
local j = redis.call('HMGET', key, 'state', 'attempt', 'attempts', 'entry', 'lane')
if j[1] ~= 'active' or j[2] ~= attempt then
  return 'lost'
end
settle(j[4], j[5])
if tonumber(j[2]) >= tonumber(j[3]) then
  bury(id, now, err)
  return 'dead'
end
redis.call('HSET', key, 'state', 'delayed', 'error', err)
redis.call('ZADD', delayed, retry_at, id)
return 'retry'
