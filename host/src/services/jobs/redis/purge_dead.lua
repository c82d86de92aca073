-- Deletes dead job ARGV[1] (or every dead job when ''); how many.
return each_dead(ARGV[1], function(id, entry)
  redis.call('XDEL', dead, entry)
  redis.call('DEL', job_key(id))
end)
