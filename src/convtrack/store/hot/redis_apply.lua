-- Apply one batch of hot-store effects atomically (see store/hot/redis.py).
-- ARGV[1]: the batch, msgpack (store/hot/redis_batch.py lays it out).
-- Returns {verdicts ("1" new / "0" not, one per effect), duplicates, latency anomalies}.
-- Keys are computed here, not declared: a single Redis (or a primary) is required.
local b = cmsgpack.unpack(ARGV[1])
local TAG = 4294967296
-- effect fields
local PART, OFF, PTAG, SLICE, MIN_SLICE, SEED, FIELD, STORED = 1, 2, 3, 4, 5, 6, 7, 8
local AT, REM, TOKEN, TOKEN_EXP, MINUTE_CELL, CONV_CELLS = 9, 10, 11, 12, 13, 14
local VALUE, SMALL_VALUE, LAT_BUCKET, ANOMALY = 15, 16, 17, 18

local function fmt(n) return string.format('%.0f', n) end

-- the group's applied positions
local applied = {}
local raw = redis.call('HGETALL', b.pos)
for i = 1, #raw, 2 do applied[tonumber(raw[i])] = tonumber(raw[i + 1]) end

-- live dedup slices, newest first, with their fanout
local live, fanout, busiest = {}, {}, 0
local index = redis.call('ZRANGE', b.dx, 0, -1)
for i = #index, 1, -1 do
  local meta = redis.call('HMGET', b.dm .. index[i], 'f', 'n', 'gone')
  local s = tonumber(index[i])
  if not meta[1] then
    redis.call('ZREM', b.dx, index[i]) -- collected by its TTL
  else
    fanout[s] = tonumber(meta[1])
    if not meta[3] then
      live[#live + 1] = s
      busiest = math.max(busiest, tonumber(meta[2]))
    end
  end
end

local function bucket(s, e) return b.d .. s .. ':' .. (e[SEED] % fanout[s]) end

-- stored dedup values of e's id in the slices that may still hold its window
local function lookup(e)
  local hits = {}
  for _, s in ipairs(live) do
    if s < e[MIN_SLICE] then break end
    local v = redis.call('HGET', bucket(s, e), e[FIELD])
    if v then hits[#hits + 1] = {s, tonumber(v)} end
  end
  return hits
end

-- aggregated increments: key -> field -> {small sum, {big decimal strings}}
local incr, incr_keys = {}, {}
local function add(key, field, small, big)
  local cells = incr[key]
  if not cells then cells = {}; incr[key] = cells; incr_keys[#incr_keys + 1] = key end
  local c = cells[field]
  if not c then c = {0, {}}; cells[field] = c end
  if small then c[1] = c[1] + small else c[2][#c[2] + 1] = big end
end
local function add_cell(cell, kind, n) add(cell[1], kind .. cell[2], n) end
local function add_value(cell, kind, e)
  if e[SMALL_VALUE] then add(cell[1], kind .. cell[2], e[SMALL_VALUE])
  else add(cell[1], kind .. cell[2], false, e[VALUE]) end
end

local verdicts, fresh, seen, seen_tokens = {}, {}, {}, {}
local duplicates, anomalies, slice_us = 0, 0, b.slice_us
for i, e in ipairs(b.effects) do
  if e[OFF] < (applied[e[PART]] or 0) then
    -- applied before (a replay): the verdict it got then, and nothing changes
    local own = false
    for _, hit in ipairs(lookup(e)) do
      if hit[2] % TAG == e[PTAG] then own = true end
    end
    verdicts[i] = own and '1' or '0'
  else
    local at, ident = e[AT], e[FIELD] .. e[SEED]
    local dup = seen[ident] ~= nil and seen[ident] + b.window_us > at
    if not dup then
      for _, hit in ipairs(lookup(e)) do
        local remembered = (hit[1] * slice_us / 1000000 + math.floor(hit[2] / TAG)) * 1000000
        if remembered + b.window_us > at then dup = true; break end
      end
    end
    local token = e[TOKEN]
    if not dup and token ~= '' then
      local expires = seen_tokens[token]
      if not expires then expires = tonumber(redis.call('GET', b.t .. token) or '0') end
      dup = expires > at
    end
    local minute_cell = b.cells[e[MINUTE_CELL]]
    add_cell(minute_cell, 'e', 1)
    if dup then
      duplicates = duplicates + 1
      add_cell(minute_cell, 'd', 1)
      verdicts[i] = '0'
    else
      verdicts[i] = '1'
      seen[ident] = e[REM]
      fresh[#fresh + 1] = e
      if token ~= '' then seen_tokens[token] = e[TOKEN_EXP] end
      if #e[CONV_CELLS] > 0 then
        for _, c in ipairs(e[CONV_CELLS]) do
          add_cell(b.cells[c], 'n', 1)
          add_value(b.cells[c], 'v', e)
        end
        add_cell(minute_cell, 'c', 1)
        add_value(minute_cell, 'v', e)
      end
      add(b.lat, tostring(e[LAT_BUCKET]), 1)
      if e[ANOMALY] then anomalies = anomalies + 1 end
    end
  end
end

-- Counters first, undone on any error (a 64-bit overflow): the script is atomic but
-- Redis does not roll back a failed one, so nothing else is written before this.
local journal = {}
local function negate(s) if s:sub(1, 1) == '-' then return s:sub(2) end return '-' .. s end
local function undo()
  for j = #journal, 1, -1 do
    local u = journal[j]
    if redis.call('HINCRBY', u[1], u[2], negate(u[3])) == 0 then redis.call('HDEL', u[1], u[2]) end
  end
end
local function hincrby(key, field, amount)
  local r = redis.pcall('HINCRBY', key, field, amount)
  if type(r) == 'table' and r.err then
    undo()
    return r.err
  end
  journal[#journal + 1] = {key, field, amount}
end
duplicates = fmt(duplicates)
for _, key in ipairs(incr_keys) do
  for field, c in pairs(incr[key]) do
    local err = c[1] ~= 0 and hincrby(key, field, fmt(c[1]))
    for _, big in ipairs(c[2]) do err = err or hincrby(key, field, big) end
    if err then return redis.error_reply('hot store: ' .. key .. ' ' .. err) end
  end
end

local function slice_ttl(s)
  return math.max(1, math.ceil(((s + 1) * slice_us + b.window_us - b.now_us) / 1000000) + b.margin_s)
end
local function ensure_slice(s)
  if fanout[s] then return end
  local meta = b.dm .. s
  local f = tonumber(redis.call('HGET', meta, 'f') or '0')
  if f == 0 then
    -- sized from the busiest live slice, so buckets stay small (listpack-encoded)
    f = b.min_fanout
    while f * b.target < busiest and f < b.max_fanout do f = f * 2 end
    redis.call('HSET', meta, 'f', f, 'n', 0)
    redis.call('EXPIRE', meta, slice_ttl(s))
    redis.call('ZADD', b.dx, s, s)
  end
  fanout[s] = f
end

local added, expiring = {}, {}
for _, e in ipairs(fresh) do
  local s = e[SLICE]
  ensure_slice(s)
  local key = bucket(s, e)
  redis.call('HSET', key, e[FIELD], e[STORED])
  if not expiring[key] then redis.call('EXPIRE', key, slice_ttl(s)); expiring[key] = true end
  added[s] = (added[s] or 0) + 1
  local token = e[TOKEN]
  if token ~= '' and seen_tokens[token] == e[TOKEN_EXP] then
    local ttl_ms = math.max(1, math.floor((e[TOKEN_EXP] - b.now_us) / 1000)) + b.margin_s * 1000
    redis.call('SET', b.t .. token, fmt(e[TOKEN_EXP]), 'PX', fmt(ttl_ms))
    local ts = math.floor(e[TOKEN_EXP] / slice_us)
    local count_key = b.tc .. ts
    redis.call('INCR', count_key)
    redis.call('EXPIRE', count_key, math.max(1, math.ceil(((ts + 1) * slice_us - b.now_us) / 1000000) + b.margin_s))
    redis.call('ZADD', b.tx, ts, ts)
    seen_tokens[token] = nil -- written once
  end
end
for s, n in pairs(added) do redis.call('HINCRBY', b.dm .. s, 'n', n) end
if #b.effects > 0 then
  redis.call('HINCRBY', b.tot, 'duplicates', duplicates)
  redis.call('HINCRBY', b.tot, 'latency_anomalies', anomalies)
  for _, key in ipairs(b.minute_keys) do
    if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, b.minute_ttl_s) end
  end
end
for _, p in ipairs(b.positions) do
  if p[2] > (applied[p[1]] or -1) then redis.call('HSET', b.pos, p[1], fmt(p[2])) end
end
for _, w in ipairs(b.writes) do redis.call('SET', w[1], w[2], 'PX', fmt(w[3])) end
return {table.concat(verdicts), tonumber(duplicates), anomalies}
