-- Shared by every job script (prepended to each). KEYS[1] is the base key
-- of one queue, `<prefix>:q:<queue>`; the queue's other keys hang off it:
--   :ready    stream of jobs ready to run (field `id`), consumer group `workers`
--   :ranked   sorted set of ready jobs with a priority (score: -priority;
--             member: `<sequence>:<id>`, so equal priorities keep their order)
--   :next     stream a claim moves ranked jobs to just before reading them,
--             leased like :ready's (group `workers`)
--   :seq      the sequence of :ranked members
--   :delayed  sorted set of delayed jobs and backoff retries, by run-at ms
--   :done     sorted set of done job ids, by finish ms (counts; swept after retention)
--   :dead     stream of dead-lettered jobs (field `id`)
--   :job:<id> hash of one job: queue, payload, attempt, attempts, trace,
--             created, priority, state (waiting|delayed|active|dead),
--             entry and lane (its stream entry: in :ready or :next),
--             dead_entry, error, finished
-- A stream's consumer group is created on the first NOGROUP error of a
-- read (from entry 0, so jobs added before any worker ran are read too).
local base = KEYS[1]
local ready = base .. ':ready'
local delayed = base .. ':delayed'
local done = base .. ':done'
local dead = base .. ':dead'
local ranked = base .. ':ranked'
local nextq = base .. ':next'
local GROUP = 'workers'

local function job_key(id)
  return base .. ':job:' .. id
end

-- Makes job `id` ready: on the ready stream, or ranked by its priority.
local function make_ready(id)
  local key = job_key(id)
  local priority = tonumber(redis.call('HGET', key, 'priority') or '0') or 0
  if priority == 0 then
    local entry = redis.call('XADD', ready, '*', 'id', id)
    redis.call('HSET', key, 'state', 'waiting', 'entry', entry, 'lane', 'ready')
  else
    local seq = redis.call('INCR', base .. ':seq')
    redis.call('ZADD', ranked, -priority, string.format('%016d:%s', seq, id))
    redis.call('HSET', key, 'state', 'waiting', 'entry', '', 'lane', '')
  end
end

-- Moves the delayed jobs whose time has come to the ready stream.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    make_ready(id)
  end
end

-- The stream of `lane`.
local function stream_of(lane)
  if lane == 'next' then
    return nextq
  end
  return ready
end

-- Takes a delivered entry off its stream (and the group's pending list).
local function settle(entry, lane)
  local stream = stream_of(lane)
  redis.call('XACK', stream, GROUP, entry)
  redis.call('XDEL', stream, entry)
end

-- Dead-letters job `id`.
local function bury(id, now, err)
  local entry = redis.call('XADD', dead, '*', 'id', id)
  redis.call('HSET', job_key(id), 'state', 'dead', 'dead_entry', entry, 'finished', now, 'error', err)
end

-- The value of `name` in a flat field/value reply.
local function field(reply, name)
  for i = 1, #reply, 2 do
    if reply[i] == name then
      return reply[i + 1]
    end
  end
  return nil
end

-- Calls `cmd` with the arguments `head` and then those of `list`, at most
-- 1000 of the list's to a call (Lua's unpack has a stack limit).
local function call_many(cmd, head, list)
  for i = 1, #list, 1000 do
    local args = {}
    for _, a in ipairs(head) do
      args[#args + 1] = a
    end
    for k = i, math.min(i + 999, #list) do
      args[#args + 1] = list[k]
    end
    redis.call(cmd, unpack(args))
  end
end

-- Marks done, at `now`, every job of `jobs` ({id, attempt} pairs, the
-- attempt as a string) that is still leased under that attempt. Returns
-- 1 per such job, 0 per job whose lease expired (or that came twice).
-- The entries, hashes and the :done set are each written by one call.
local function ack_jobs(jobs, now)
  local out, seen, keys, finished = {}, {}, {}, {}
  local entries = {ready = {}, next = {}}
  for i, job in ipairs(jobs) do
    local id, attempt = job[1], job[2]
    out[i] = 0
    if not seen[id] then
      seen[id] = true
      local key = job_key(id)
      local j = redis.call('HMGET', key, 'state', 'attempt', 'entry', 'lane')
      if j[1] == 'active' and j[2] == attempt then
        out[i] = 1
        local lane = j[4] == 'next' and 'next' or 'ready'
        entries[lane][#entries[lane] + 1] = j[3]
        keys[#keys + 1] = key
        finished[#finished + 1] = now
        finished[#finished + 1] = id
      end
    end
  end
  for lane, list in pairs(entries) do
    if #list > 0 then
      call_many('XACK', {stream_of(lane), GROUP}, list)
      call_many('XDEL', {stream_of(lane)}, list)
    end
  end
  if #keys > 0 then
    -- A done job keeps only its id (in :done, for the counts); its
    -- dedupe key lives on by itself until the queue's retention.
    call_many('DEL', {}, keys)
    call_many('ZADD', {done}, finished)
  end
  return out
end

-- Calls `action(id, entry)` for dead job `one` (its entry in :dead), or
-- for every dead job when `one` is ''; entries of :dead whose job is no
-- longer dead are dropped on the way. Returns how many jobs it acted on.
local function each_dead(one, action)
  if one ~= '' then
    local j = redis.call('HMGET', job_key(one), 'state', 'dead_entry')
    if j[1] ~= 'dead' then
      return 0
    end
    action(one, j[2])
    return 1
  end
  local n = 0
  for _, e in ipairs(redis.call('XRANGE', dead, '-', '+')) do
    local id = field(e[2], 'id')
    if redis.call('HGET', job_key(id), 'state') == 'dead' then
      action(id, e[1])
      n = n + 1
    else
      redis.call('XDEL', dead, e[1])
    end
  end
  return n
end
