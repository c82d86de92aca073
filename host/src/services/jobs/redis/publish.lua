-- Appends one event to the topic's stream KEYS[2] when it has subscriber
-- groups. ARGV: event id, payload, attempts, trace, now, topic.
-- Returns how many groups will receive it.
local events = KEYS[2]
if redis.call('EXISTS', events) == 0 then
  return 0
end
local groups = redis.call('XINFO', 'GROUPS', events)
if #groups == 0 then
  return 0
end
redis.call('XADD', events, '*', 'id', ARGV[1], 'payload', ARGV[2], 'attempts', ARGV[3],
  'trace', ARGV[4], 'created', ARGV[5], 'topic', ARGV[6])
return #groups
