-- The newest ARGV[1] dead jobs: {id, payload, attempts, error, created, failed}.
local out = {}
for _, e in ipairs(redis.call('XREVRANGE', dead, '+', '-', 'COUNT', ARGV[1])) do
  local id = field(e[2], 'id')
  local j = redis.call('HMGET', job_key(id), 'payload', 'attempt', 'error', 'created', 'finished')
  if j[1] then
    out[#out + 1] = {id, j[1], tonumber(j[2]), j[3] or '', tonumber(j[4]) or 0, tonumber(j[5]) or 0}
  end
end
return out
