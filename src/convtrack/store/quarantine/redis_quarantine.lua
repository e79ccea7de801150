-- The quarantine in Redis: one script, one operation per call (ARGV[1]), atomic.
-- KEYS are not used (every key shares the prefix; a single Redis, no Cluster); ARGV[2]
-- is the prefix "<p>:q:". Layout (store/quarantine/redis.py):
--   seq string, pos hash (position key -> id), row hash (id -> msgpack event),
--   att hash (id -> attempts), pk hash (id -> position key), wh hash (id -> queue name),
--   nt hash (id -> note of a settled claim, while it is not queued again),
--   ids zset (all ids), st:<stage> zset (ids of a stage),
--   qd:<stage>\0<scope> zset (queued ids; score 0 free, else the claim's lease end, us)
local op, p = ARGV[1], ARGV[2]

if op == 'add' then
  -- ARGV[3..]: per event its position key, stage, queue name and row
  local new = 0
  for i = 3, #ARGV, 4 do
    local poskey, stage, queue, row = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    if redis.call('HEXISTS', p .. 'pos', poskey) == 0 then
      local id = redis.call('INCR', p .. 'seq')
      redis.call('HSET', p .. 'pos', poskey, id)
      redis.call('HSET', p .. 'row', id, row)
      redis.call('HSET', p .. 'att', id, 1)
      redis.call('HSET', p .. 'pk', id, poskey)
      redis.call('HSET', p .. 'wh', id, queue)
      redis.call('ZADD', p .. 'ids', id, id)
      redis.call('ZADD', p .. 'st:' .. stage, id, id)
      new = new + 1
    end
  end
  return new
end

local function queued(id)
  local queue = redis.call('HGET', p .. 'wh', id)
  return queue, redis.call('ZSCORE', p .. 'qd:' .. queue, id)
end

if op == 'mark' then
  -- ARGV[3]: the stage ("" all)
  local index = ARGV[3] == '' and p .. 'ids' or p .. 'st:' .. ARGV[3]
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local queue, score = queued(id)
    if not score then
      redis.call('ZADD', p .. 'qd:' .. queue, 0, id)
      redis.call('HDEL', p .. 'nt', id)
      n = n + 1
    end
  end
  return n
end

if op == 'claim' then
  -- ARGV[3] now (us), ARGV[4] lease end (us), ARGV[5] limit, ARGV[6..] queue names
  local out, left = {}, tonumber(ARGV[5])
  for i = 6, #ARGV do
    if left <= 0 then break end
    local queue = p .. 'qd:' .. ARGV[i]
    local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', ARGV[3], 'LIMIT', 0, left)
    for _, id in ipairs(ids) do
      redis.call('ZADD', queue, ARGV[4], id)
      table.insert(out, id)
      table.insert(out, redis.call('HGET', p .. 'row', id))
      table.insert(out, redis.call('HGET', p .. 'att', id))
      left = left - 1
    end
  end
  return out
end

if op == 'settle' then
  -- ARGV[3] the note, ARGV[4..] claimed ids: unqueued for good (until 'mark'); returns
  -- the ids that were still queued
  local out = {}
  for i = 4, #ARGV do
    local id = ARGV[i]
    local queue, score = queued(id)
    if score then
      redis.call('ZREM', p .. 'qd:' .. queue, id)
      redis.call('HSET', p .. 'nt', id, ARGV[3])
      table.insert(out, id)
    end
  end
  return out
end

if op == 'giveback' then
  -- ARGV[3..] settled ids not re-submitted: queued again, free
  for i = 3, #ARGV do
    local id = ARGV[i]
    local queue = redis.call('HGET', p .. 'wh', id)
    if queue then
      redis.call('ZADD', p .. 'qd:' .. queue, 0, id)
      redis.call('HDEL', p .. 'nt', id)
    end
  end
  return 0
end

if op == 'remove' then
  for i = 3, #ARGV do
    local id = ARGV[i]
    local queue = redis.call('HGET', p .. 'wh', id)
    if queue then
      local row = redis.call('HGET', p .. 'row', id)
      redis.call('ZREM', p .. 'qd:' .. queue, id)
      redis.call('HDEL', p .. 'pos', redis.call('HGET', p .. 'pk', id))
      for _, h in ipairs({'row', 'att', 'pk', 'wh', 'nt'}) do redis.call('HDEL', p .. h, id) end
      redis.call('ZREM', p .. 'ids', id)
      local stage = string.match(queue, '^([^%z]*)')
      redis.call('ZREM', p .. 'st:' .. stage, id)
    end
  end
  return 0
end

if op == 'again' then
  -- ARGV[3] id, ARGV[4] the row with its new error
  local id = ARGV[3]
  local queue = redis.call('HGET', p .. 'wh', id)
  if queue then
    redis.call('ZREM', p .. 'qd:' .. queue, id)
    redis.call('HSET', p .. 'row', id, ARGV[4])
    redis.call('HINCRBY', p .. 'att', id, 1)
    redis.call('HDEL', p .. 'nt', id)
  end
  return 0
end

if op == 'read' then
  -- ARGV[3] stage ("" all), ARGV[4] after id, ARGV[5] limit (0: the total only)
  local index = ARGV[3] == '' and p .. 'ids' or p .. 'st:' .. ARGV[3]
  local out = {redis.call('ZCARD', index)}
  if tonumber(ARGV[5]) > 0 then
    local ids = redis.call('ZRANGEBYSCORE', index, '(' .. ARGV[4], '+inf', 'LIMIT', 0, ARGV[5])
    for _, id in ipairs(ids) do
      local _, score = queued(id)
      table.insert(out, id)
      table.insert(out, redis.call('HGET', p .. 'row', id))
      table.insert(out, redis.call('HGET', p .. 'att', id))
      table.insert(out, score and 1 or 0)
      table.insert(out, redis.call('HGET', p .. 'nt', id) or '')
    end
  end
  return out
end

return redis.error_reply('unknown quarantine operation ' .. tostring(op))
