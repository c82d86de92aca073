-- Creates subscriber group ARGV[1] on the topic's event stream KEYS[2] at
-- its end ('$': it receives the events published from now on); a group
-- that exists keeps its position. Records the group's queue ARGV[2] in
-- the registry ARGV[3].
local made = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '$', 'MKSTREAM')
if type(made) == 'table' and made.err ~= nil and not string.find(made.err, 'BUSYGROUP') then
  return redis.error_reply(made.err)
end
redis.call('SADD', ARGV[3], ARGV[2])
return 1
