-- Deletes dead job ARGV[1] (or every dead job when ''); how many.
if ARGV[1] ~= '' then
  local j = redis.call('HMGET', job_key(ARGV[1]), 'state', 'dead_entry')
  if j[1] ~= 'dead' then
    return 0
  end
  redis.call('XDEL', dead, j[2])
  redis.call('DEL', job_key(ARGV[1]))
  return 1
end
local n = 0
for _, e in ipairs(redis.call('XRANGE', dead, '-', '+')) do
  local id = field(e[2], 'id')
  if redis.call('HGET', job_key(id), 'state') == 'dead' then
    redis.call('DEL', job_key(id))
    n = n + 1
  end
  redis.call('XDEL', dead, e[1])
end
return n
