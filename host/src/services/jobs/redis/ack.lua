-- Marks attempt ARGV[2] of job ARGV[1] done at ARGV[3]; 0 if the job is
-- no longer leased under that attempt (its lease expired).
local id, attempt, now = ARGV[1], ARGV[2], ARGV[3]
local key = job_key(id)
local j = redis.call('HMGET', key, 'state', 'attempt', 'entry', 'lane')
if j[1] ~= 'active' or j[2] ~= attempt then
  return 0
end
settle(j[3], j[4])
-- A done job keeps only its id (in :done, for the counts); its dedupe
-- key lives on by itself until the queue's retention.
redis.call('DEL', key)
redis.call('ZADD', done, now, id)
return 1
