-- Queues dead job ARGV[1] (or every dead job when '') again with fresh
-- attempts; how many.
local function revive(id, entry)
  redis.call('XDEL', dead, entry)
  redis.call('HSET', job_key(id), 'attempt', 0)
  redis.call('HDEL', job_key(id), 'dead_entry', 'finished')
  make_ready(id)
end
if ARGV[1] ~= '' then
  local j = redis.call('HMGET', job_key(ARGV[1]), 'state', 'dead_entry')
  if j[1] ~= 'dead' then
    return 0
  end
  revive(ARGV[1], j[2])
  return 1
end
local n = 0
for _, e in ipairs(redis.call('XRANGE', dead, '-', '+')) do
  local id = field(e[2], 'id')
  if redis.call('HGET', job_key(id), 'state') == 'dead' then
    revive(id, e[1])
    n = n + 1
  else
    redis.call('XDEL', dead, e[1])
  end
end
return n
