#!lua flags=no-cluster
-- Queue, claim or purge dead letters, atomically (see store/deadletters/redis.py).
-- ARGV[1]: 'mark' (queue every row of the destinations; returns how many), 'purge'
-- (delete them; returns how many) or 'claim' (queue again the claims of one
-- destination whose lease ended by ARGV[9] (µs), then take up to ARGV[8] queued rows
-- out of its queue, claimed until ARGV[10]; returns them); ARGV[2..5]: destinations
-- set, row base, rows-of base, queue base; ARGV[6]: one destination, or '' for all;
-- ARGV[7]: claims base.
local op, dests, row_base, rows_of, queued = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local names = ARGV[6] ~= '' and {ARGV[6]} or redis.call('SMEMBERS', dests)
local claims = ARGV[7]
local FIELDS = {'e', 'p', 'o', 'y', 's', 'a', 'n', 'f', 'l'}

if op == 'claim' then
  local queue, claimed = queued .. names[1], claims .. names[1]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', claimed, '-inf', ARGV[9])) do
    if redis.call('EXISTS', row_base .. id) == 1 then redis.call('ZADD', queue, id, id) end
  end
  redis.call('ZREMRANGEBYSCORE', claimed, '-inf', ARGV[9])
  local ids = redis.call('ZRANGE', queue, 0, tonumber(ARGV[8]) - 1)
  local out = {}
  for _, id in ipairs(ids) do
    redis.call('ZREM', queue, id)
    local values = redis.call('HMGET', row_base .. id, unpack(FIELDS))
    if values[1] then
      redis.call('ZADD', claimed, ARGV[10], id)
      table.insert(values, 1, id)
      out[#out + 1] = values
    end
  end
  return out
end

local count = 0
for _, name in ipairs(names) do
  local all, queue = rows_of .. name, queued .. name
  if op == 'mark' then
    count = count + redis.call('ZCARD', all)
    redis.call('ZUNIONSTORE', queue, 1, all)
  elseif op == 'purge' then
    local ids = redis.call('ZRANGE', all, 0, -1)
    for _, id in ipairs(ids) do redis.call('DEL', row_base .. id) end
    count = count + #ids
    redis.call('DEL', all, queue, claims .. name)
    redis.call('SREM', dests, name)
  end
end
return count
