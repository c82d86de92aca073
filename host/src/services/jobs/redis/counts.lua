-- Counts of every queue in the registry ARGV[1]: {queue, waiting,
-- active, delayed, done, dead} each. ARGV: registry, queue key prefix
-- (`<prefix>:q:`), topic key prefix (`<prefix>:t:`), now.
local registry, qprefix, tprefix, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
for _, queue in ipairs(redis.call('SMEMBERS', registry)) do
  local b = qprefix .. queue
  local r, d = b .. ':ready', b .. ':delayed'
  local n = b .. ':next'
  local function pending_of(stream)
    local groups = redis.pcall('XINFO', 'GROUPS', stream)
    if type(groups) == 'table' and groups.err == nil then
      for _, g in ipairs(groups) do
        if field(g, 'name') == 'workers' then
          return field(g, 'pending')
        end
      end
    end
    return 0
  end
  local pending = pending_of(r) + pending_of(n)
  local lag = 0
  -- A topic group's events not yet taken into its queue wait too.
  local topic, group = string.match(queue, '^(.*)/([^/]*)$')
  if topic then
    local tg = redis.pcall('XINFO', 'GROUPS', tprefix .. topic .. ':events')
    if type(tg) == 'table' and tg.err == nil then
      for _, g in ipairs(tg) do
        if field(g, 'name') == group and type(field(g, 'lag')) == 'number' then
          lag = field(g, 'lag')
        end
      end
    end
  end
  local due = redis.call('ZCOUNT', d, '-inf', now)
  out[#out + 1] = {
    queue,
    redis.call('XLEN', r) + redis.call('XLEN', n) - pending + due + lag
      + redis.call('ZCARD', b .. ':ranked'),
    pending,
    redis.call('ZCOUNT', d, '(' .. now, '+inf'),
    redis.call('ZCARD', b .. ':done'),
    redis.call('XLEN', b .. ':dead'),
  }
end
return out
