-- Leases up to `max` ready jobs to `consumer`. ARGV: consumer, max, now,
-- and for a topic's subscriber group: the topic's event stream and the
-- group's name ('' for a queue).
-- Returns {id, payload, attempt, attempts, trace, created} per job.
local consumer, max, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local events, group = ARGV[4], ARGV[5]
promote(now)
if events ~= '' then
  -- The group's new events become jobs of the group's own queue, in this
  -- same script, so none is lost between the two streams.
  local got = redis.pcall('XREADGROUP', 'GROUP', group, 'trellis', 'COUNT', max, 'STREAMS', events, '>')
  if type(got) == 'table' and got.err == nil then
    for _, e in ipairs(got[1][2]) do
      local f = e[2]
      local id = field(f, 'id') .. '.' .. group
      redis.call('HSET', job_key(id), 'queue', field(f, 'topic') .. '/' .. group, 'payload', field(f, 'payload'),
        'attempt', 0, 'attempts', field(f, 'attempts'), 'created', field(f, 'created'),
        'trace', field(f, 'trace'))
      make_ready(id)
      redis.call('XACK', events, group, e[1])
    end
  end
end
local out = {}

-- Reads up to `n` new entries of `stream` for `consumer`, creating the
-- group on the stream's first read.
local function read_new(stream, n)
  local got = redis.pcall('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', n, 'STREAMS', stream, '>')
  if type(got) == 'table' and got.err then
    if not string.find(got.err, 'NOGROUP', 1, true) then
      error(got.err)
    end
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
    got = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', n, 'STREAMS', stream, '>')
  end
  return got
end

-- Leases up to `n` undelivered jobs of `stream` (lane `lane`).
local function take(stream, lane, n)
  if n <= 0 then
    return
  end
  local got = read_new(stream, n)
  if not got then
    return
  end
  for _, e in ipairs(got[1][2]) do
    local id = field(e[2], 'id')
    local key = job_key(id)
    local j = redis.call('HMGET', key, 'state', 'attempt', 'payload', 'attempts', 'trace', 'created')
    if j[1] ~= 'waiting' then
      settle(e[1], lane) -- not a live entry of a waiting job; never expected
    else
      local attempt = (tonumber(j[2]) or 0) + 1
      redis.call('HSET', key, 'state', 'active', 'attempt', attempt, 'entry', e[1], 'lane', lane)
      out[#out + 1] = {id, j[3], attempt, tonumber(j[4]), j[5], tonumber(j[6]) or 0}
    end
  end
end

-- Leases up to `n` ranked jobs scored `min` to `max`, best first: moved
-- to :next and read from it at once, so they are leased like the others.
local function take_ranked(min, max, n)
  if n <= 0 then
    return
  end
  local members = redis.call('ZRANGEBYSCORE', ranked, min, max, 'LIMIT', 0, n)
  if #members == 0 then
    return
  end
  for _, m in ipairs(members) do
    redis.call('ZREM', ranked, m)
    redis.call('XADD', nextq, '*', 'id', string.match(m, '^%d+:(.*)$'))
  end
  take(nextq, 'next', n)
end

-- Higher priorities first, then priority 0 (the stream, oldest first),
-- then negative ones.
take_ranked('-inf', '(0', max)
take(ready, 'ready', max - #out)
take_ranked('(0', '+inf', max - #out)
return out
