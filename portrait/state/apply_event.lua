-- Apply input events' ProfileDeltas to the customers they belong to, one after another.
--
-- ARGV[1]: key prefix; ARGV[2..]: one delta per event, as JSON (processors/profile.py
-- ProfileDelta). Answers one string per delta, in order. Each event is applied by
-- apply_one below, in one script, so that no crash or concurrent worker sees half of it:
--   1. resolve the event's identifiers through the identity index;
--   2. if a resolved customer has seen this event id, answer "dup" with the outputs
--      still pending delivery (so a redelivery after a crash re-emits them);
--   3. merge every other resolved customer into the survivor (earliest first_seen,
--      ties: the smaller id) with the same typed operations the delta uses;
--   4. apply the delta, bump the version, record the event id;
--   5. answer (and keep as pending until delivery is confirmed) the customer's fields
--      and the old value of every field that changed — or, for a quiet delta (replay),
--      only the customer id, keeping nothing pending.
-- An event whose data makes apply_one fail answers "error"; the others still apply.
--
-- A customer's profile is one hash whose field prefix gives its merge operation:
--   c:  integer counter (add)         d:, e:  decayed weight / weighted sum (add)
--   a:  attribute, t: tag, r: other register (keep the larger string: order key first)
--   y:  member of the trail of actions towards employees ("order\temployee" → action);
--       only the newest 100 are kept (CAPS below), whatever the arrival order
--   n:  member of a set of recent negative messages, named by their order key; kept
--       only while newer than the register r:calm (the latest non-negative message),
--       so the negative streak is the size of the set
--   m:first_seen (min), m:last_seen (max), m:version (add: +1 per change, a merge adds
--   the loser's, so the version counts every applied change whatever the order)
-- r:prod:<product> is the register "order\theld|declined" the call advice reads.
-- so applying events in any order, or merging in any order, gives the same content.
--
-- Group analysis: {P}trend:<window start ms> counts messages, kw:<term> and in:<intent>
-- of each applied event in its event-time window (streams/trends.py), listed in
-- {P}trend:index.
-- Population: {P}pop:spend counts customers per spend bucket (floor(4·log2(1 + total
-- amount))); every change of a customer's e:amount, every merge and every erasure moves
-- the customer between buckets, so indicators.wealth can be a percentile.
--
-- Answer: fields separated by \30; lists inside a field by \31; an absent old value is
-- \29. Input validation keeps control characters out of every id, name and source.
-- Per-customer keys share the hash tag {cid}; the identity index and merge partners are
-- derived at run time, so the script needs a standalone Redis or a single shard.

local P = ARGV[1]
local RS, US, ABSENT = '\30', '\31', '\29'

local TRAIL_KEPT = 50
-- Families of fields kept to a size, so that a chatty customer's hash (read whole for
-- every event) stops growing: field prefix → how many are kept, and which:
--   newest   the largest names (order keys: the latest events), whatever the arrival
--            order — so the kept set is the same in any order;
--   heaviest the largest values (decayed weights; ties keep the smaller name). Beyond
--            the cap this is an approximation: a term dropped and mentioned again
--            starts over, so the lightest terms can differ between arrival orders.
local CAPS = {
  {prefix = 'y:', kept = 100, keep = 'newest'},      -- actions towards employees
  {prefix = 'r:pb:', kept = 50, keep = 'newest'},    -- problems (processors/problems.py)
  {prefix = 'r:rs:', kept = 50, keep = 'newest'},    -- their resolutions
  {prefix = 'd:kw:', kept = 300, keep = 'heaviest'}, -- keyword weights
}
local FAMILY = {'p', 'ids', 'seen', 'pending', 'merged', 'redirect', 'calls'}

local function ck(cid, s) return P .. 'c:{' .. cid .. '}:' .. s end
local POPULATION = P .. 'pop:spend'

local function spend_bucket(amount)
  return string.format('%d', math.floor(math.log(1 + amount) / math.log(2) * 4))
end

local function move_spend(before, after)
  if before == after then return end
  if before then redis.call('HINCRBY', POPULATION, spend_bucket(before), -1) end
  if after then redis.call('HINCRBY', POPULATION, spend_bucket(after), 1) end
end
local function idxk(id) return P .. 'idx:' .. id end

-- erasure ---------------------------------------------------------------------------

local function erase(cid)
  move_spend(tonumber(redis.call('HGET', ck(cid, 'p'), 'e:amount')), nil)
  for _, id in ipairs(redis.call('SMEMBERS', ck(cid, 'ids'))) do
    if redis.call('GET', idxk(id)) == cid then redis.call('DEL', idxk(id)) end
  end
  for _, m in ipairs(redis.call('SMEMBERS', ck(cid, 'merged'))) do
    redis.call('DEL', ck(m, 'redirect'))
  end
  for _, call in ipairs(redis.call('SMEMBERS', ck(cid, 'calls'))) do
    redis.call('DEL', ck(cid, 'call:' .. call))
  end
  for _, s in ipairs(FAMILY) do redis.call('DEL', ck(cid, s)) end
end

-- the survivor's fields, changed in memory and written once (reset per event) -------

local cur, old, dirty, dropped, ids_added
local grew  -- field prefixes (2 and 5 characters) that gained a field in this event

local function put(f, v)
  if cur[f] == nil then
    grew[string.sub(f, 1, 2)] = true
    grew[string.sub(f, 1, 5)] = true
  end
  if old[f] == nil then old[f] = cur[f] or ABSENT end
  cur[f] = v
  dirty[f] = true
  dropped[f] = nil
end

local function drop(f)
  if cur[f] == nil then return end
  if old[f] == nil then old[f] = cur[f] end
  cur[f] = nil
  dirty[f] = nil
  dropped[f] = true
end

local function add_int(f, n) put(f, string.format('%d', (tonumber(cur[f]) or 0) + n)) end
local function add_float(f, x) put(f, string.format('%.17g', (tonumber(cur[f]) or 0) + x)) end
local function keep_larger(f, v)
  local c = cur[f]
  if (not c) or v > c then put(f, v) end
end
local function keep_extreme(f, v, want_smaller)
  local n = tonumber(cur[f])
  if (not n) or (want_smaller and v < n) or ((not want_smaller) and v > n) then
    put(f, string.format('%d', v))
  end
end

-- one typed operation per field prefix: the same for a delta and for a merge
local function combine(f, v)
  local kind = string.sub(f, 1, 2)
  if kind == 'c:' then add_int(f, tonumber(v))
  elseif kind == 'd:' then add_float(f, tonumber(v))
  elseif kind == 'e:' then add_float(f, tonumber(v))
  elseif kind == 'a:' or kind == 't:' or kind == 'r:' then keep_larger(f, v)
  elseif kind == 'y:' then
    if not cur[f] then put(f, v) end
  elseif kind == 'n:' then
    local calm = cur['r:calm']
    if (not cur[f]) and ((not calm) or string.sub(f, 3) > calm) then put(f, v) end
  elseif f == 'm:first_seen' then keep_extreme(f, tonumber(v), true)
  elseif f == 'm:last_seen' then keep_extreme(f, tonumber(v), false)
  elseif f == 'm:version' then add_int(f, tonumber(v))  -- merged: both customers' changes
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
  return tonumber(redis.call('HGET', ck(cid, 'p'), 'm:first_seen')) or math.huge
end

local function merge(loser, surv)
  move_spend(tonumber(redis.call('HGET', ck(loser, 'p'), 'e:amount')), nil)
  local flat = redis.call('HGETALL', ck(loser, 'p'))
  for i = 1, #flat, 2 do combine(flat[i], flat[i + 1]) end
  for _, id in ipairs(redis.call('SMEMBERS', ck(loser, 'ids'))) do add_identifier(surv, id) end
  redis.call('ZUNIONSTORE', ck(surv, 'seen'), 2, ck(surv, 'seen'), ck(loser, 'seen'),
    'AGGREGATE', 'MAX')
  local pending = redis.call('HGETALL', ck(loser, 'pending'))
  for i = 1, #pending, 2 do redis.call('HSETNX', ck(surv, 'pending'), pending[i], pending[i + 1]) end
  -- live call sessions follow the customer (a merge mid-call keeps its advice)
  for _, call in ipairs(redis.call('SMEMBERS', ck(loser, 'calls'))) do
    local from, to = ck(loser, 'call:' .. call), ck(surv, 'call:' .. call)
    local session = redis.call('HGETALL', from)
    for i = 1, #session, 2 do redis.call('HSETNX', to, session[i], session[i + 1]) end
    local ttl = redis.call('PTTL', from)
    if ttl > 0 and redis.call('PTTL', to) < ttl then redis.call('PEXPIRE', to, ttl) end
    redis.call('SADD', ck(surv, 'calls'), call)
    redis.call('DEL', from)
  end
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

-- call sessions (seed 003) ---------------------------------------------------------
--
-- One hash per live call, {P}c:{cid}:call:<call id>, listed in {P}c:{cid}:calls; both
-- expire ttl ms after the call's latest event (ended ttl after call.ended). Fields:
-- agent, elapsed (largest offset_ms), phase (of that offset), trail (seq:emotion of
-- customer turns), advice (kind US product of the latest prompt), advised (its trail).

-- A product the customer holds, or declined less than decline ms before ts, is skipped.
local function skipped(product, ts, decline_ms)
  local v = cur['r:prod:' .. product]
  if not v then return false end
  local order, status = string.match(v, '^([^\t]*)\t(.*)$')
  if status == 'held' then return true end
  return status == 'declined' and ts - (tonumber(string.sub(order, 1, 15)) or 0) < decline_ms
end

local function append_capped(list, item)
  local items = {}
  if list and list ~= '' then
    for x in string.gmatch(list, '[^,]+') do table.insert(items, x) end
  end
  table.insert(items, item)
  while #items > TRAIL_KEPT do table.remove(items, 1) end
  return table.concat(items, ',')
end

-- Update the session; answer the prompt (kind US product US rate US agent US phase) when
-- this customer turn changes the call's advice, else ''.
local function call_event(cid, call, ts)
  local key = ck(cid, 'call:' .. call.id)
  redis.call('SADD', ck(cid, 'calls'), call.id)
  if call.agent then redis.call('HSET', key, 'agent', call.agent) end
  if call.offset then
    local elapsed = tonumber(redis.call('HGET', key, 'elapsed'))
    if (not elapsed) or call.offset >= elapsed then
      redis.call('HSET', key, 'elapsed', call.offset, 'phase', call.phase)
    end
  end
  if call.outcome then redis.call('HSET', key, 'outcome', call.outcome) end
  local prompt = ''
  if call.kind then
    redis.call('HSET', key, 'trail',
      append_capped(redis.call('HGET', key, 'trail'), call.seq .. ':' .. call.emotion))
    local kind, product, rate = call.kind, '', ''
    if kind == 'recommend_product' then
      kind = 'introduce_or_answer'
      for _, c in ipairs(call.candidates) do
        if not skipped(c[1], ts, call.decline_ms) then
          kind, product, rate = 'recommend_product', c[1], string.format('%.4f', c[2])
          break
        end
      end
    end
    local advice = kind .. US .. product
    if redis.call('HGET', key, 'advice') ~= advice then
      redis.call('HSET', key, 'advice', advice, 'advised',
        append_capped(redis.call('HGET', key, 'advised'), call.seq .. ':' .. kind .. ':' .. product))
      local agent = redis.call('HGET', key, 'agent') or ''
      prompt = table.concat({kind, product, rate, agent, call.phase or ''}, US)
    end
  end
  for _, k in ipairs({key, ck(cid, 'calls')}) do redis.call('PEXPIRE', k, call.ttl) end
  return prompt
end

-- one event -------------------------------------------------------------------------

local function apply_one(raw)
  local d = cjson.decode(raw)

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
    if redis.call('EXISTS', tomb) == 1 then return 'dup' end
    for _, c in ipairs(found) do erase(c) end
    redis.call('SET', tomb, '1', 'PX', math.max(d.ret, 1))
    if #found == 0 then return 'noop' end
    return 'erased' .. RS .. table.concat(found, US)
  end

  for _, c in ipairs(found) do
    if redis.call('ZSCORE', ck(c, 'seen'), d.eid) then
      local pending = redis.call('HGET', ck(c, 'pending'), d.eid)
      if pending then return 'dup' .. RS .. c .. RS .. pending end
      return 'dup' .. RS .. c
    end
  end

  cur, old, dirty, dropped, ids_added = {}, {}, {}, {}, {}
  grew = {}
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
  end
  local flat = redis.call('HGETALL', ck(cid, 'p'))
  for i = 1, #flat, 2 do cur[flat[i]] = flat[i + 1] end
  local spend_before = tonumber(cur['e:amount'])
  for _, c in ipairs(found) do
    if c ~= cid then
      merge(c, cid)
      table.insert(losers, c)
    end
  end

  for _, id in ipairs(d.ids) do add_identifier(cid, id) end
  keep_extreme('m:first_seen', d.ts, true)
  keep_extreme('m:last_seen', d.ts, false)
  for f, v in pairs(d.fields) do combine(f, v) end
  add_int('m:version', 1)
  move_spend(spend_before, tonumber(cur['e:amount']))
  for _, cap in ipairs(CAPS) do
    if grew[cap.prefix] then
      local family, n = {}, #cap.prefix
      for f, _ in pairs(cur) do
        if string.sub(f, 1, n) == cap.prefix then table.insert(family, f) end
      end
      if #family > cap.kept then
        if cap.keep == 'heaviest' then  -- lightest first; ties: the larger name first
          table.sort(family, function(a, b)
            local x, y = tonumber(cur[a]), tonumber(cur[b])
            if x ~= y then return x < y end
            return a > b
          end)
        else
          table.sort(family)  -- oldest first
        end
        for i = 1, #family - cap.kept do drop(family[i]) end
      end
    end
  end
  if dirty['r:calm'] then
    -- negatives older than the latest calm message no longer count towards the streak
    local calm = cur['r:calm']
    for f, _ in pairs(cur) do
      if string.sub(f, 1, 2) == 'n:' and string.sub(f, 3) <= calm then drop(f) end
    end
  end

  -- written in slices: unpack() has a limit, and a merge can dirty many fields
  local writes = {}
  for f, _ in pairs(dirty) do
    table.insert(writes, f)
    table.insert(writes, cur[f])
    if #writes >= 1000 then
      redis.call('HSET', ck(cid, 'p'), unpack(writes))
      writes = {}
    end
  end
  if #writes > 0 then redis.call('HSET', ck(cid, 'p'), unpack(writes)) end
  local gone = {}
  for f, _ in pairs(dropped) do table.insert(gone, f) end
  if #gone > 0 then redis.call('HDEL', ck(cid, 'p'), unpack(gone)) end

  local prompt = ''
  if d.call then prompt = call_event(cid, d.call, d.ts) end

  -- phase × product statistics from feedback: global, counted once per event id
  for f, n in pairs(d.stats or {}) do redis.call('HINCRBY', P .. 'stats:products', f, n) end

  -- group analysis: the event's keywords and intent counted into its time window
  if d.trend then
    local window = P .. 'trend:' .. string.format('%d', d.trend.w)
    redis.call('HINCRBY', window, 'messages', 1)
    for _, f in ipairs(d.trend.keys) do redis.call('HINCRBY', window, f, 1) end
    redis.call('PEXPIRE', window, d.trend.exp)
    redis.call('ZADD', P .. 'trend:index', d.trend.w, string.format('%d', d.trend.w))
  end

  local seen = ck(cid, 'seen')
  redis.call('ZADD', seen, d.now, d.eid)
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. string.format('%d', d.now - d.ret))
  -- replay: state only, no outputs to build or keep pending
  if d.quiet then return 'ok' .. RS .. cid end

  local after, before = {}, {}
  for f, v in pairs(cur) do
    table.insert(after, f)
    table.insert(after, v)
  end
  for f, v in pairs(old) do
    table.insert(before, f)
    table.insert(before, v)
  end
  local body = table.concat({
    table.concat(losers, US),
    table.concat(ids_added, US),
    table.concat(redis.call('SMEMBERS', ck(cid, 'ids')), US),
    table.concat(after, US),
    table.concat(before, US),
    prompt,
  }, RS)
  redis.call('HSET', ck(cid, 'pending'), d.eid, body)
  return 'ok' .. RS .. cid .. RS .. body
end

local answers = {}
for i = 2, #ARGV do
  local ok, answer = pcall(apply_one, ARGV[i])
  if ok then
    answers[#answers + 1] = answer
  else
    answers[#answers + 1] = 'error' .. RS .. tostring(answer)
  end
end
return answers
