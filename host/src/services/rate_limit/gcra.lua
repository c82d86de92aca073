-- One GCRA check, atomically, in Redis: the same step as `Gcra::step` in
-- gcra.rs. The clock is Redis's own (TIME), so every host sharing this
-- Redis measures time alike, whatever their clocks say.
--
-- KEYS[1]  the bucket; its value is the TAT in microseconds
-- ARGV[1]  emission interval in microseconds
-- ARGV[2]  window (requests x interval) in microseconds
-- Returns  { allowed (1 or 0), TAT after the check minus now, in µs }

-- Redis before 5 replicates scripts verbatim and refuses a write after
-- TIME unless told to replicate the effects instead; later ones always do.
if redis.replicate_commands then
  redis.replicate_commands()
end

local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local next_tat = tat + interval
if next_tat - now > window then
  return { 0, tat - now }
end
-- The key expires when the TAT passes, when it would mean "idle" anyway.
-- %.0f: tostring would print a µs timestamp in exponent notation.
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
  'PX', math.ceil((next_tat - now) / 1000))
return { 1, next_tat - now }
