-- Takes back jobs leased longer than ARGV[1] ms (their worker's host
-- died) with XAUTOCLAIM, and queues them again, or dead-letters those out
-- of attempts. ARGV: min idle ms, now, this host's consumer name.
-- Returns how many.
local min_idle, now, consumer = ARGV[1], ARGV[2], ARGV[3]
local why = 'lease expired: the worker did not settle the job within the visibility timeout'
local n = 0
for _, lane in ipairs({'ready', 'next'}) do
  local got = redis.pcall('XAUTOCLAIM', stream_of(lane), GROUP, consumer, min_idle, '0-0', 'COUNT', 100)
  -- An error is a missing group: nothing was ever claimed from that stream.
  if type(got) == 'table' and got.err == nil then
    for _, e in ipairs(got[2]) do
      local id = e[2] and field(e[2], 'id')
      settle(e[1], lane)
      if id then
        local key = job_key(id)
        local j = redis.call('HMGET', key, 'state', 'attempt', 'attempts', 'entry', 'lane')
        if j[1] == 'active' and j[4] == e[1] and j[5] == lane then
          n = n + 1
          if tonumber(j[2]) >= tonumber(j[3]) then
            bury(id, now, why)
          else
            redis.call('HSET', key, 'error', why)
            make_ready(id)
          end
        end
      end
    end
  end
end
return n
