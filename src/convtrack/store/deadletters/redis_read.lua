#!lua flags=no-writes,no-cluster
-- Dead letters oldest first, and how many there are, as one snapshot
-- (see store/deadletters/redis.py).
-- ARGV[1..4]: destinations set, row base, rows-of base, queue base; ARGV[5]: one
-- destination or '' for all; ARGV[6]: limit (0: the total only).
-- Returns {total, {id, destination, queued (0/1), e, p, o, y, s, a, n, f, l}, ...}.
local dests, row_base, rows_of, queued = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local names = ARGV[5] ~= '' and {ARGV[5]} or redis.call('SMEMBERS', dests)
local limit = tonumber(ARGV[6])
local FIELDS = {'e', 'p', 'o', 'y', 's', 'a', 'n', 'f', 'l'}

local total, found = 0, {}
for _, name in ipairs(names) do
  total = total + redis.call('ZCARD', rows_of .. name)
  if limit > 0 then
    for _, id in ipairs(redis.call('ZRANGE', rows_of .. name, 0, limit - 1)) do
      found[#found + 1] = {tonumber(id), name}
    end
  end
end
table.sort(found, function(x, y) return x[1] < y[1] end)
local out = {total}
for i = 1, math.min(limit, #found) do
  local id, name = string.format('%.0f', found[i][1]), found[i][2]
  local values = redis.call('HMGET', row_base .. id, unpack(FIELDS))
  if values[1] then
    local is_queued = redis.call('ZSCORE', queued .. name, id) and 1 or 0
    local row = {id, name, is_queued}
    for _, v in ipairs(values) do row[#row + 1] = v end
    out[#out + 1] = row
  end
end
return out
