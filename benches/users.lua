-- wrk script for the SQL read benchmark (benches/run.sh):
--   wrk ... -s benches/users.lua URL -- MAX_ID
-- Each request is GET /users/<id> with <id> uniform in 1..MAX_ID (default
-- 10000), so the reads spread over the whole seeded table. Each wrk thread
-- seeds its generator from its thread number, so every server gets the same
-- id sequences.

local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_no", next_thread)
end

function init(args)
  max_id = tonumber(args[1]) or 10000
  math.randomseed(thread_no or 1)
end

function request()
  return wrk.format("GET", "/users/" .. math.random(max_id))
end
