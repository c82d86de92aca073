-- Shared by every job script (prepended to each). KEYS[1] is the base key
-- of one queue, `<prefix>:q:<queue>`; the queue's other keys hang off it:
--   :ready    stream of jobs ready to run (field `id`), consumer group `workers`
--   :delayed  sorted set of delayed jobs and backoff retries, by run-at ms
--   :done     sorted set of done job ids, by finish ms (counts; swept after retention)
--   :dead     stream of dead-lettered jobs (field `id`)
--   :job:<id> hash of one job: queue, payload, attempt, attempts, trace,
--             created, state (waiting|delayed|active|dead), entry (its
--             :ready stream entry), dead_entry, error, finished
local base = KEYS[1]
local ready = base .. ':ready'
local delayed = base .. ':delayed'
local done = base .. ':done'
local dead = base .. ':dead'
local GROUP = 'workers'

local function job_key(id)
  return base .. ':job:' .. id
end

-- Puts job `id` on the ready stream.
local function make_ready(id)
  local entry = redis.call('XADD', ready, '*', 'id', id)
  redis.call('HSET', job_key(id), 'state', 'waiting', 'entry', entry)
end

-- Moves the delayed jobs whose time has come to the ready stream.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    make_ready(id)
  end
end

-- Takes a delivered entry off the ready stream (and the group's pending list).
local function settle(entry)
  redis.call('XACK', ready, GROUP, entry)
  redis.call('XDEL', ready, entry)
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
