-- Marks jobs done at ARGV[1]: ARGV[2], ARGV[3] is the first job's id and
-- attempt, ARGV[4], ARGV[5] the second's, and so on. Returns, per job, 1,
-- or 0 if it is no longer leased under that attempt (its lease expired).
local jobs = {}
for i = 2, #ARGV - 1, 2 do
  jobs[#jobs + 1] = {ARGV[i], ARGV[i + 1]}
end
return ack_jobs(jobs, ARGV[1])
