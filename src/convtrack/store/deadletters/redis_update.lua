#!lua flags=no-cluster
-- Change dead letters by id, atomically; a row already gone is passed over (a purge or
-- the cap may remove it while a runner holds it). See store/deadletters/redis.py.
-- Every change ends the row's replay claim, if any.
-- ARGV[1]: the change: 'remove', 'failed' (status, answer, attempts, last attempt µs),
-- 'claim' (note) or 'unclaim' (answer per id); ARGV[2..5]: row base, rows-of base,
-- queue base, claims base; ARGV[6]: how many arguments the change takes (from
-- ARGV[7]); then the ids (for 'unclaim': id, answer pairs).
local op, row_base, rows_of, queued, claimed = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local nargs = tonumber(ARGV[6])
local first = 7 + nargs
local step = op == 'unclaim' and 2 or 1
for i = first, #ARGV, step do
  local id = ARGV[i]
  local row = row_base .. id
  local destination = redis.call('HGET', row, 'd')
  if destination then
    redis.call('ZREM', claimed .. destination, id)
    if op == 'remove' then
      redis.call('DEL', row)
      redis.call('ZREM', rows_of .. destination, id)
      redis.call('ZREM', queued .. destination, id)
    elseif op == 'failed' then
      redis.call('HSET', row, 's', ARGV[7], 'a', ARGV[8], 'l', ARGV[10])
      redis.call('HINCRBY', row, 'n', ARGV[9])
      redis.call('ZREM', queued .. destination, id)
    elseif op == 'claim' then
      redis.call('HSET', row, 'a', ARGV[7])
      redis.call('ZREM', queued .. destination, id)
    elseif op == 'unclaim' then
      redis.call('HSET', row, 'a', ARGV[i + 1])
      redis.call('ZADD', queued .. destination, id, id)
    end
  end
end
return 0
