-- Forgets done jobs finished before ARGV[1]; drops consumers (hosts that
-- went away) idle over ARGV[2] ms with nothing pending; for a topic group
-- (ARGV[3], the topic's event stream), trims events every group has read.
-- Returns how many done jobs.
local n = redis.call('ZREMRANGEBYSCORE', done, '-inf', '(' .. ARGV[1])
for _, stream in ipairs({ready, nextq}) do
  local consumers = redis.pcall('XINFO', 'CONSUMERS', stream, GROUP)
  if type(consumers) == 'table' and consumers.err == nil then
    for _, c in ipairs(consumers) do
      if field(c, 'pending') == 0 and field(c, 'idle') > tonumber(ARGV[2]) then
        redis.call('XGROUP', 'DELCONSUMER', stream, GROUP, field(c, 'name'))
      end
    end
  end
end
local events = ARGV[3]
if events ~= '' and redis.call('EXISTS', events) == 1 then
  local oldest = nil
  local function parse(id)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    return tonumber(ms), tonumber(seq)
  end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', events)) do
    local last = field(g, 'last-delivered-id')
    if oldest == nil then
      oldest = last
    else
      local a, b = parse(last)
      local c, d = parse(oldest)
      if a < c or (a == c and b < d) then
        oldest = last
      end
    end
  end
  if oldest then
    -- Every group has read (and acked, in the claim script) the entries
    -- up to `oldest`, that one included.
    local ms, seq = parse(oldest)
    redis.call('XTRIM', events, 'MINID', string.format('%d-%d', ms, seq + 1))
  end
end
return n
