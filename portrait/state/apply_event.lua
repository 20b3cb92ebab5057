-- Apply one input event's ProfileDelta to the customer it belongs to, atomically.
--
-- ARGV[1]: key prefix; ARGV[2]: the delta as JSON (processors/profile.py ProfileDelta).
-- In one script, so that no crash or concurrent worker can see half of it:
--   1. resolve the event's identifiers through the identity index;
--   2. if any resolved customer has seen this event id, answer "dup" with the
--      outputs still pending delivery (so a redelivery after a crash re-emits them);
--   3. merge every other resolved customer into the survivor (earliest first_seen,
--      ties: the smaller id): counters add, weights add, registers keep the larger
--      order key, sets union, the loser redirects to the survivor;
--   4. apply the delta with the same operations, bump the version, record the event id;
--   5. return (and keep as pending until delivery is confirmed) the customer's state
--      and the old values of every field that changed.
-- Per-customer keys share the hash tag {cid}. The script reaches keys it derives at run
-- time (identity index, merge partner), so it needs a standalone Redis or one shard.

local P = ARGV[1]
local d = cjson.decode(ARGV[2])

local FAMILY = {'meta', 'cnt', 'dec', 'attr', 'tag', 'ids', 'seen', 'pending', 'merged', 'redirect'}

local function ck(cid, s) return P .. 'c:{' .. cid .. '}:' .. s end
local function idxk(id) return P .. 'idx:' .. id end

local function to_map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

-- erasure ---------------------------------------------------------------------------

local function erase(cid)
  for _, id in ipairs(redis.call('SMEMBERS', ck(cid, 'ids'))) do
    if redis.call('GET', idxk(id)) == cid then redis.call('DEL', idxk(id)) end
  end
  for _, m in ipairs(redis.call('SMEMBERS', ck(cid, 'merged'))) do
    redis.call('DEL', ck(m, 'redirect'))
  end
  for _, s in ipairs(FAMILY) do redis.call('DEL', ck(cid, s)) end
end

-- resolution ------------------------------------------------------------------------

local found, is_found = {}, {}
for _, id in ipairs(d.ids) do
  local c = redis.call('GET', idxk(id))
  if c and not is_found[c] then
    is_found[c] = true
    table.insert(found, c)
  end
end

if d.erase then
  local tomb = P .. 'erasure:' .. d.eid
  if redis.call('EXISTS', tomb) == 1 then return cjson.encode({status = 'dup'}) end
  for _, c in ipairs(found) do erase(c) end
  redis.call('SET', tomb, '1', 'PX', math.max(d.ret, 1))
  if #found == 0 then return cjson.encode({status = 'noop'}) end
  return cjson.encode({status = 'erased', cids = found})
end

for _, c in ipairs(found) do
  if redis.call('ZSCORE', ck(c, 'seen'), d.eid) then
    local pending = redis.call('HGET', ck(c, 'pending'), d.eid)
    if pending then
      return '{"status":"dup","cid":' .. cjson.encode(c) .. ',"replay":' .. pending .. '}'
    end
    return cjson.encode({status = 'dup', cid = c})
  end
end

-- operations that record the survivor's old values ----------------------------------

local old = {meta = {}, cnt = {}, dec = {}, attr = {}, tag = {}}
local ids_added = {}

local function remember(section, field, current)
  if old[section][field] == nil then old[section][field] = current end
end

local function add_int(cid, f, n)
  local key = ck(cid, 'cnt')
  remember('cnt', f, redis.call('HGET', key, f))
  redis.call('HINCRBY', key, f, n)
end

local function add_float(cid, f, x)
  local key = ck(cid, 'dec')
  remember('dec', f, redis.call('HGET', key, f))
  redis.call('HINCRBYFLOAT', key, f, x)
end

local function keep_larger(cid, section, f, v)
  local key = ck(cid, section)
  local cur = redis.call('HGET', key, f)
  if (not cur) or v > cur then
    remember(section, f, cur)
    redis.call('HSET', key, f, v)
  end
end

local function meta_extreme(cid, f, v, want_smaller)
  local key = ck(cid, 'meta')
  local cur = redis.call('HGET', key, f)
  local n = tonumber(cur)
  if (not n) or (want_smaller and v < n) or ((not want_smaller) and v > n) then
    remember('meta', f, cur)
    redis.call('HSET', key, f, string.format('%d', v))
  end
end

local function add_identifier(cid, id)
  if redis.call('SADD', ck(cid, 'ids'), id) == 1 then
    table.insert(ids_added, id)
    redis.call('SET', idxk(id), cid)
  end
end

-- merge -----------------------------------------------------------------------------

local function first_seen(cid)
  return tonumber(redis.call('HGET', ck(cid, 'meta'), 'first_seen')) or math.huge
end

local function merge(loser, surv)
  local cnt = redis.call('HGETALL', ck(loser, 'cnt'))
  for i = 1, #cnt, 2 do add_int(surv, cnt[i], tonumber(cnt[i + 1])) end
  local dec = redis.call('HGETALL', ck(loser, 'dec'))
  for i = 1, #dec, 2 do add_float(surv, dec[i], dec[i + 1]) end
  for _, section in ipairs({'attr', 'tag'}) do
    local h = redis.call('HGETALL', ck(loser, section))
    for i = 1, #h, 2 do keep_larger(surv, section, h[i], h[i + 1]) end
  end
  local meta = to_map(redis.call('HGETALL', ck(loser, 'meta')))
  if meta.first_seen then meta_extreme(surv, 'first_seen', tonumber(meta.first_seen), true) end
  if meta.last_seen then meta_extreme(surv, 'last_seen', tonumber(meta.last_seen), false) end
  for _, id in ipairs(redis.call('SMEMBERS', ck(loser, 'ids'))) do add_identifier(surv, id) end
  redis.call('ZUNIONSTORE', ck(surv, 'seen'), 2, ck(surv, 'seen'), ck(loser, 'seen'),
    'AGGREGATE', 'MAX')
  local pending = redis.call('HGETALL', ck(loser, 'pending'))
  for i = 1, #pending, 2 do redis.call('HSETNX', ck(surv, 'pending'), pending[i], pending[i + 1]) end
  local merged = redis.call('SMEMBERS', ck(loser, 'merged'))
  table.insert(merged, loser)
  for _, m in ipairs(merged) do
    redis.call('SADD', ck(surv, 'merged'), m)
    redis.call('SET', ck(m, 'redirect'), surv)
  end
  for _, s in ipairs(FAMILY) do
    if s ~= 'redirect' then redis.call('DEL', ck(loser, s)) end
  end
end

local cid
local losers = {}
if #found == 0 then
  cid = d.newcid
  redis.call('DEL', ck(cid, 'redirect'))
else
  cid = found[1]
  for i = 2, #found do
    local c = found[i]
    local fc, fs = first_seen(c), first_seen(cid)
    if fc < fs or (fc == fs and c < cid) then cid = c end
  end
  for _, c in ipairs(found) do
    if c ~= cid then
      merge(c, cid)
      table.insert(losers, c)
    end
  end
end

-- apply the delta -------------------------------------------------------------------

for _, id in ipairs(d.ids) do add_identifier(cid, id) end
meta_extreme(cid, 'first_seen', d.ts, true)
meta_extreme(cid, 'last_seen', d.ts, false)
for f, n in pairs(d.cnt) do add_int(cid, f, n) end
for f, x in pairs(d.dec) do add_float(cid, f, x) end
for f, v in pairs(d.attr) do keep_larger(cid, 'attr', f, v) end
for f, v in pairs(d.tag) do keep_larger(cid, 'tag', f, v) end
remember('meta', 'version', redis.call('HGET', ck(cid, 'meta'), 'version'))
redis.call('HINCRBY', ck(cid, 'meta'), 'version', 1)

local seen = ck(cid, 'seen')
redis.call('ZADD', seen, d.now, d.eid)
redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. string.format('%d', d.now - d.ret))

local state = {
  meta = to_map(redis.call('HGETALL', ck(cid, 'meta'))),
  cnt = to_map(redis.call('HGETALL', ck(cid, 'cnt'))),
  dec = to_map(redis.call('HGETALL', ck(cid, 'dec'))),
  attr = to_map(redis.call('HGETALL', ck(cid, 'attr'))),
  tag = to_map(redis.call('HGETALL', ck(cid, 'tag'))),
  ids = redis.call('SMEMBERS', ck(cid, 'ids')),
}
local out = cjson.encode({
  status = 'ok', cid = cid, merged = losers, state = state, old = old, ids_added = ids_added,
})
redis.call('HSET', ck(cid, 'pending'), d.eid, out)
return out
