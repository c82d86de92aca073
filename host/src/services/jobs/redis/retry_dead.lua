-- Queues dead job ARGV[1] (or every dead job when '') again with fresh
-- attempts; how many.
return each_dead(ARGV[1], function(id, entry)
  redis.call('XDEL', dead, entry)
  redis.call('HSET', job_key(id), 'attempt', 0)
  redis.call('HDEL', job_key(id), 'dead_entry', 'finished')
  make_ready(id)
end)
