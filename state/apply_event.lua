-- Apply input events' ProfileDeltas to the customers they belong to, one after another.
--
-- ARGV[1]: key prefix; ARGV[2]: options as JSON ({"kw_shown": n, "kw_watch": [terms],
-- "limits": {kind: n}}: how many keywords an answer shows, terms whose weights it always
-- carries, the most identifiers of each kind one person may hold);
-- ARGV[3]: the chunk's input positions (streams/offsets.py), or '' where none are kept
-- (replay, tests): {"key": offsets hash, "parts": [[partition, expected, next], ...]},
-- positions as "generation:offset". Unless every partition's stored position is the
-- expected one (or this generation's, at or past it: a retried batch), the script
-- applies nothing and fails with STALE_OFFSETS: Redis lost writes, or a newer
-- generation owns the partition. Otherwise each partition's position becomes its next,
-- in this script: the applied offsets never part from the state they describe.
-- ARGV[4..]: one delta per event, as JSON (processors/profile.py ProfileDelta). Answers
-- one string per delta, in order. Each event is applied by apply_one below, in one
-- script, so that no crash or concurrent worker sees half of it:
--   1. find each identifier's person through the identity index;
--   2. if one of them has seen this event id, answer "dup" with the outputs still
--      pending delivery (so a redelivery after a crash re-emits them);
--   3. an erased person's event from before the erasure is dropped (suppression);
--   4. resolve within the identity rules, merge every other resolved person into the
--      survivor (earliest first_seen, ties: the smaller id) with the same typed
--      operations the delta uses; an event with no person identifier applies to the
--      accounts it names instead;
--   5. apply the delta, bump the version, link the accounts named, record the event id;
--   6. answer (and keep as pending until delivery is confirmed) the profile hash, the
--      views of its families, the old value of every field that changed and the
--      accounts held — or, for a quiet delta (replay), only the id, keeping nothing.
-- An event whose data makes apply_one fail answers "error"; the others still apply.
--
-- The layout (key names, prefixes, families, caps, separators) is rendered from
-- processors/layout.py at the line below. Work per event is proportional to what the
-- event touches: the profile hash holds bounded fields only (its size follows the
-- variety of the customer's data, not the number of events); what grows with history
-- lives in one sorted set per family, kept to its cap by rank, read only as far as the
-- document shows it.
--
-- Profile-hash field prefixes give the merge operation:
--   c:  integer counter (add)         d:, e:  decayed weight / weighted sum (add)
--   a:  attribute, t: tag, r: other register (keep the larger string: order key first)
--   m:first_seen (min), m:last_seen (max), m:version (add: +1 per change, a merge adds
--   the loser's, so the version counts every applied change whatever the order)
-- Families (sorted sets, FAMILIES): y: actions towards employees and r:pb:/r:rs:
-- problems and resolutions keep the newest (members "suffix US value", score 0, so the
-- lexically largest order keys survive the cap in any arrival order); d:kw: keyword
-- weights keep the heaviest (score = minus the weight, added); n: negative messages are
-- kept only while newer than r:calm (the latest non-negative message), so the streak is
-- ZCARD.
-- r:prod:<product> is the register "order\theld|declined" the call advice reads.
-- So applying events in any order, or merging in any order, gives the same content.
--
-- Group analysis: {P}trend:<window start ms> counts messages, kw:<term> and in:<intent>
-- of each applied event in its event-time window (streams/trends.py), listed in
-- {P}trend:index.
-- Population: {P}pop:spend counts customers per spend bucket (floor(4·log2(1 + total
-- amount))); every change of a customer's e:amount, every merge and every erasure moves
-- the customer between buckets, so indicators.wealth can be a percentile.
--
-- Answer: fields separated by RS; lists inside a field by US; an absent old value is
-- ABSENT; the family views last, separated by VS, their members by MS. Input validation
-- keeps control characters out of every id, name and source.
-- Per-customer keys share the hash tag {cid}; the identity index and merge partners are
-- derived at run time, so the script needs a standalone Redis or a single shard.

local P = ARGV[1]
--@LAYOUT@
local OPTIONS = cjson.decode(ARGV[2])
-- On a Redis Cluster (state/cluster.py) each call touches one hash slot: the
-- caller resolves identities, claims identifiers and runs the steps that span slots;
-- here the global counters an event adds are kept with the customer ('gq') and returned
-- for the caller's stripe step, and the account links are left to the caller.
local CLUSTER = OPTIONS.cluster

local LIMITS = OPTIONS.limits or {}  -- identifier kind → the most one person may hold
local TRAIL_KEPT = 50
local FAMILY_OF = {}  -- field prefix → family; family prefixes are 2 or 5 characters
local NEGATIVES       -- the family whose size is the negative streak
for _, fam in ipairs(FAMILIES) do
  FAMILY_OF[fam.prefix] = fam
  if fam.keep == 'heaviest' and OPTIONS.kw_shown then fam.shown = OPTIONS.kw_shown end
  if fam.keep == 'since_calm' then NEGATIVES = fam end
end

local function family_of(f)
  return FAMILY_OF[string.sub(f, 1, 5)] or FAMILY_OF[string.sub(f, 1, 2)]
end

local function ck(cid, s) return P .. G.ENTITY .. cid .. '}:' .. s end

local function spend_bucket(amount)
  return string.format('%d', math.floor(math.log(1 + amount) / math.log(2) * 4))
end

-- global counters: product statistics, trend windows, the spend population. `base` is
-- the key prefix of the counters (P standalone, a stripe's on a cluster); g holds
-- {stats = {field = n}, trend = {w, keys, exp}, spend = {bucket = n}}
local function add_globals(base, g)
  for f, n in pairs(g.stats or {}) do redis.call('HINCRBY', base .. G.PRODUCT_STATS, f, n) end
  if g.trend then
    local window = base .. G.TREND .. string.format('%d', g.trend.w)
    redis.call('HINCRBY', window, 'messages', 1)
    for _, f in ipairs(g.trend.keys) do redis.call('HINCRBY', window, f, 1) end
    redis.call('PEXPIRE', window, g.trend.exp)
    redis.call('ZADD', base .. G.TREND_INDEX, g.trend.w, string.format('%d', g.trend.w))
  end
  for bucket, n in pairs(g.spend or {}) do
    if n ~= 0 then redis.call('HINCRBY', base .. G.SPEND_POPULATION, bucket, n) end
  end
end

-- the global increments of several events (a stripe's share of a chunk) added up first,
-- then one write per counter: the same totals as add_globals of each in turn
local function add_globals_summed(base, list)
  local stats, windows, spend = {}, {}, {}
  for _, g in ipairs(list) do
    for f, n in pairs(g.stats or {}) do stats[f] = (stats[f] or 0) + n end
    if g.trend then
      local w = windows[g.trend.w] or {counts = {messages = 0}}
      windows[g.trend.w] = w
      w.counts.messages = w.counts.messages + 1
      for _, f in ipairs(g.trend.keys) do w.counts[f] = (w.counts[f] or 0) + 1 end
      w.exp = g.trend.exp  -- the last one's, as in turn
    end
    for bucket, n in pairs(g.spend or {}) do spend[bucket] = (spend[bucket] or 0) + n end
  end
  for f, n in pairs(stats) do redis.call('HINCRBY', base .. G.PRODUCT_STATS, f, n) end
  for start, w in pairs(windows) do
    local window = base .. G.TREND .. string.format('%d', start)
    for f, n in pairs(w.counts) do redis.call('HINCRBY', window, f, n) end
    redis.call('PEXPIRE', window, w.exp)
    redis.call('ZADD', base .. G.TREND_INDEX, start, string.format('%d', start))
  end
  for bucket, n in pairs(spend) do
    if n ~= 0 then redis.call('HINCRBY', base .. G.SPEND_POPULATION, bucket, n) end
  end
end

local gacc  -- cluster: the current event's global increments (nil: none yet)

local function record_globals(g)
  if not CLUSTER then return add_globals(P, g) end
  gacc = gacc or {}
  if g.stats then gacc.stats = g.stats end
  if g.trend then gacc.trend = g.trend end
  for bucket, n in pairs(g.spend or {}) do
    gacc.spend = gacc.spend or {}
    gacc.spend[bucket] = (gacc.spend[bucket] or 0) + n
  end
end

-- a customer (an account: kind ACCOUNT_SPEND, else '') moved between spend buckets:
-- nothing to count when the bucket stays (most purchases of a customer who has spent a
-- while)
local function move_spend(before, after, kind)
  kind = kind or ''
  local from = before and (kind .. spend_bucket(before))
  local to = after and (kind .. spend_bucket(after))
  if from == to then return end
  local spend = {}
  if from then spend[from] = -1 end
  if to then spend[to] = 1 end
  record_globals({spend = spend})
end
local function idxk(id) return P .. G.INDEX .. id end

-- processed event ids: 8-byte hashes in one hash per retention epoch, appended to the
-- field (of SEEN_BUCKETS) of the hash's first byte: a check reads one bucket, and a
-- bucket is written whole, so it holds no spare room as an appended string does ---------

local function unhex(h)
  return (string.gsub(h, '..', function(x) return string.char(tonumber(x, 16)) end))
end

local function hex(b)
  return (string.gsub(b, '.', function(c) return string.format('%02x', string.byte(c)) end))
end

local function id_hash(eid)
  return unhex(string.sub(redis.sha1hex(eid), 1, SEEN_HASH_BYTES * 2))
end

local function epoch_keys(cid, now, ret, name)
  local epoch = math.floor(now / math.max(ret, 1))
  return {ck(cid, name .. string.format('%d', epoch)),
          ck(cid, name .. string.format('%d', epoch - 1))}
end

-- this epoch's and the last one's hashes of processed ids (a field per bucket)
local function seen_bases(cid, now, ret) return epoch_keys(cid, now, ret, SEEN) end

-- the single strings of ids that versions before the buckets wrote (read, merged and
-- deleted with the buckets until they expire)
local function legacy_seen_keys(cid, now, ret) return epoch_keys(cid, now, ret, SEEN_LEGACY) end

local function bucket_of(hash)
  return string.format('%x', string.byte(hash, 1) % SEEN_BUCKETS)
end

local function drop_seen(cid, now, ret)
  local keys = legacy_seen_keys(cid, now, ret)
  for _, base in ipairs(seen_bases(cid, now, ret)) do table.insert(keys, base) end
  redis.call('DEL', unpack(keys))
end

local function holds(blob, hash)
  local from = 1
  while blob do
    local at = string.find(blob, hash, from, true)
    if not at then return false end
    if (at - 1) % SEEN_HASH_BYTES == 0 then return true end
    from = at + 1
  end
  return false
end

local function has_seen(cid, hash, now, ret)
  local bucket = bucket_of(hash)
  for _, base in ipairs(seen_bases(cid, now, ret)) do
    if holds(redis.call('HGET', base, bucket), hash) then return true end
  end
  for _, key in ipairs(legacy_seen_keys(cid, now, ret)) do
    if holds(redis.call('GET', key), hash) then return true end
  end
  return false
end

-- ids (a string of hashes) into an epoch's hash, each to its bucket
local function add_seen(base, blob, ret)
  local by = {}
  for at = 1, #blob, SEEN_HASH_BYTES do
    local hash = string.sub(blob, at, at + SEEN_HASH_BYTES - 1)
    local bucket = bucket_of(hash)
    by[bucket] = by[bucket] or {}
    table.insert(by[bucket], hash)
  end
  for bucket, hashes in pairs(by) do
    local held = redis.call('HGET', base, bucket) or ''
    redis.call('HSET', base, bucket, held .. table.concat(hashes))
  end
  redis.call('PEXPIRE', base, 2 * math.max(ret, 1))
end

-- all the ids of an epoch (its buckets and legacy string), as one string
local function seen_blob(cid, now, ret, i)
  local parts = redis.call('HVALS', seen_bases(cid, now, ret)[i])
  table.insert(parts, redis.call('GET', legacy_seen_keys(cid, now, ret)[i]) or '')
  return table.concat(parts)
end

local function delete_customer(cid, keep_redirect)
  for _, s in ipairs(CUSTOMER_KEYS) do
    if not (keep_redirect and s == K.REDIRECT) then redis.call('DEL', ck(cid, s)) end
  end
end

-- erasure ---------------------------------------------------------------------------

local function account_of(acct) return ACCOUNT_ENTITY .. acct end

-- an agent whose current customer this person is forgets them (the agents they met)
local function forget_contacts(cid)
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', ck(cid, K.PROFILE), cursor, 'MATCH', MET .. '*', 'COUNT', 500)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      local agent = P .. AGENT .. '{' .. string.sub(page[2][i], #MET + 1) .. '}'
      if redis.call('HGET', agent, 'customer_id') == cid then redis.call('DEL', agent) end
    end
  until cursor == '0'
end

-- an account left with no people goes with its data, out of the spend population
local function drop_account(a, now, ret)
  move_spend(tonumber(redis.call('HGET', ck(a, K.PROFILE), F.AMOUNT)), nil, ACCOUNT_SPEND)
  drop_seen(a, now, ret)
  delete_customer(a, false)
end

local function erase(cid, now, ret)
  move_spend(tonumber(redis.call('HGET', ck(cid, K.PROFILE), F.AMOUNT)), nil)
  forget_contacts(cid)
  -- unlinked from their accounts; an account with no people left goes with its data
  for _, acct in ipairs(redis.call('SMEMBERS', ck(cid, K.ACCOUNTS))) do
    local a = account_of(acct)
    redis.call('SREM', ck(a, K.PEOPLE), cid)
    if redis.call('SCARD', ck(a, K.PEOPLE)) == 0 then
      drop_account(a, now, ret)
    end
  end
  for _, id in ipairs(redis.call('SMEMBERS', ck(cid, K.IDS))) do
    if redis.call('GET', idxk(id)) == cid then redis.call('DEL', idxk(id)) end
  end
  for _, m in ipairs(redis.call('SMEMBERS', ck(cid, K.MERGED))) do
    redis.call('DEL', ck(m, K.REDIRECT))
  end
  for _, call in ipairs(redis.call('SMEMBERS', ck(cid, K.CALLS))) do
    redis.call('DEL', ck(cid, CALL_KEY .. call))
  end
  drop_seen(cid, now, ret)
  delete_customer(cid, false)
end

-- suppression: an erased identifier's keyed hash → the erasure time ----------------------

local function sup_key(hash) return P .. G.SUPPRESSION .. hash end

local function suppress(hash, ts, ttl)
  local key = sup_key(hash)
  local t = tonumber(redis.call('GET', key))
  if (not t) or ts > t then redis.call('SET', key, string.format('%d', ts), 'PX', ttl) end
end

-- erase a person, suppressing every identifier they held as of the erasure time
local function erase_person(c, ts, ttl, now, ret)
  for _, h in ipairs(redis.call('SMEMBERS', ck(c, K.ID_HASHES))) do suppress(h, ts, ttl) end
  erase(c, now, ret)
end

-- the latest erasure time among an event's identifiers, or nil
local function erased_at(hashes)
  local latest
  for _, h in ipairs(hashes) do
    local t = tonumber(redis.call('GET', sup_key(h)))
    if t and ((not latest) or t > latest) then latest = t end
  end
  return latest
end

-- the survivor's state, changed in memory and written once (reset per event) ----------

local cur, old, dirty, ids_added
local links_added  -- accounts newly linked to the person (by the event or a merge)
local rejections   -- identifiers the rules rejected here: kind US reason
local added    -- family prefix → members added (or, by weight, changed) in this event
local oldest   -- family prefix → the oldest member shown before or after the event
local touched  -- view group → true when a family of the group changed in this event
local cid      -- the survivor

local function put(f, v)
  if old[f] == nil then old[f] = cur[f] or ABSENT end
  cur[f] = v
  dirty[f] = true
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

-- families ----------------------------------------------------------------------------

-- A heaviest family stores minus the weight as the score, so that rank order is the
-- document's order (heaviest first, ties: the smaller name first): the view is a plain
-- range, and the cap drops the largest ranks (the lightest; ties: the larger name).
local function weight_of(score)
  if not score then return ABSENT end
  return string.format('%.17g', -tonumber(score))
end

-- the old weights of the terms an event adds to, in one call
local function family_prefetch(fields)
  for _, fam in ipairs(FAMILIES) do
    if fam.keep == 'heaviest' then
      local names, terms = {}, {}
      for f, _ in pairs(fields) do
        if old[f] == nil and string.sub(f, 1, #fam.prefix) == fam.prefix then
          table.insert(names, f)
          table.insert(terms, string.sub(f, #fam.prefix + 1))
        end
      end
      if #terms > 0 then
        local scores = redis.call('ZMSCORE', ck(cid, fam.key), unpack(terms))
        for i, f in ipairs(names) do old[f] = weight_of(scores[i]) end
      end
    end
  end
end

local function family_add(fam, f, v)
  local key = ck(cid, fam.key)
  local suffix = string.sub(f, #fam.prefix + 1)
  if fam.keep == 'heaviest' then
    if old[f] == nil then old[f] = weight_of(redis.call('ZSCORE', key, suffix)) end
    redis.call('ZINCRBY', key, -tonumber(v), suffix)
    -- counted even when the term was there: a heavier term can pass one shown before
    added[fam.prefix] = (added[fam.prefix] or 0) + 1
  elseif fam.keep == 'since_calm' then
    local calm = cur[CALM]
    if calm and suffix <= calm then return end
    if redis.call('ZADD', key, 'NX', 0, suffix) == 0 then return end
    added[fam.prefix] = (added[fam.prefix] or 0) + 1
  else  -- newest: set once (a name holds its event's order key, so its value is fixed)
    if redis.call('ZADD', key, 'NX', 0, suffix .. US .. v) == 0 then return end
    if old[f] == nil then old[f] = ABSENT end
    added[fam.prefix] = (added[fam.prefix] or 0) + 1
  end
  touched[fam.view] = true
end

-- keep a family to its cap; a dropped member that was there before the event keeps its
-- old value in the answer, so the worker can rebuild the document as it was
local function family_cap(fam)
  if fam.kept <= 0 or not added[fam.prefix] then return end
  local key = ck(cid, fam.key)
  local over = redis.call('ZCARD', key) - fam.kept
  if over <= 0 then return end
  if fam.keep == 'heaviest' then
    local gone = redis.call('ZRANGE', key, fam.kept, -1, 'WITHSCORES')
    for i = 1, #gone, 2 do
      local f = fam.prefix .. gone[i]
      if old[f] == nil then old[f] = weight_of(gone[i + 1]) end
    end
    redis.call('ZREMRANGEBYRANK', key, fam.kept, -1)
    return
  else
    for _, member in ipairs(redis.call('ZRANGE', key, 0, over - 1)) do
      local suffix, value = string.match(member, '^([^\31]*)\31(.*)$')
      local f = fam.prefix .. suffix
      if old[f] == nil then
        old[f] = value
        -- it was shown before: a view that starts from this family starts here
        if (not oldest[fam.prefix]) or member < oldest[fam.prefix] then
          oldest[fam.prefix] = member
        end
      end
    end
  end
  redis.call('ZREMRANGEBYRANK', key, 0, over - 1)
end

-- The members an answer shows, as the sorted set holds them (joined by MS: the worker
-- splits them, so the script does no per-member work): the newest or heaviest `shown`
-- plus as many as the event changed (so the document as it was before can be rebuilt
-- from the old values), ties at the edge included; a family that names another in
-- `since` shows its members from that family's oldest shown one on (the resolutions a
-- shown problem can pair with). `oldest` records each family's oldest shown member.
local function family_view(fam)
  local key = ck(cid, fam.key)
  if fam.keep == 'since_calm' then return tostring(redis.call('ZCARD', key)) end
  local stop = -1
  if fam.shown > 0 then stop = fam.shown + (added[fam.prefix] or 0) - 1 end
  if fam.keep == 'heaviest' then  -- scores are minus the weights (see weight_of)
    local top = redis.call('ZRANGE', key, 0, stop, 'WITHSCORES')
    local watched = OPTIONS.kw_watch or {}
    if #watched > 0 then
      for i, w in ipairs(redis.call('ZMSCORE', key, unpack(watched))) do
        if w then
          table.insert(top, watched[i])
          table.insert(top, w)
        end
      end
    end
    return table.concat(top, MS)
  end
  local members
  if fam.since ~= '' then
    local from = oldest[fam.since]
    if not from then return '' end
    members = redis.call('ZRANGEBYLEX', key, '[' .. from, '+')
  else
    members = redis.call('ZREVRANGE', key, 0, stop)
    local last = members[#members]
    if last and ((not oldest[fam.prefix]) or last < oldest[fam.prefix]) then
      oldest[fam.prefix] = last
    end
  end
  return table.concat(members, MS)
end

-- one typed operation per field prefix: the same for a delta and for a merge
local function combine(f, v)
  local fam = family_of(f)
  if fam then return family_add(fam, f, v) end
  local kind = string.sub(f, 1, 2)
  if kind == 'c:' then add_int(f, tonumber(v))
  elseif kind == 'd:' then add_float(f, tonumber(v))
  elseif kind == 'e:' then add_float(f, tonumber(v))
  elseif kind == 'a:' or kind == 't:' or kind == 'r:' then keep_larger(f, v)
  elseif f == F.FIRST_SEEN then keep_extreme(f, tonumber(v), true)
  elseif f == F.LAST_SEEN then keep_extreme(f, tonumber(v), false)
  elseif f == F.VERSION then add_int(f, tonumber(v))  -- merged: both customers' changes
  end
end

local function add_identifier(id, hash)
  if redis.call('SADD', ck(cid, K.IDS), id) == 1 then
    table.insert(ids_added, id)
    if not CLUSTER then redis.call('SET', idxk(id), cid) end  -- cluster: claimed by the caller
    if hash then redis.call('SADD', ck(cid, K.ID_HASHES), hash) end
  end
end

-- merge -----------------------------------------------------------------------------

local function first_seen(c)
  return tonumber(redis.call('HGET', ck(c, K.PROFILE), F.FIRST_SEEN)) or math.huge
end

-- Everything a merge takes from a loser, read from its keys (one slot): the profile
-- hash, each family's members as the sorted sets hold them, identifiers, accounts,
-- processed-id strings, pending outputs, live call sessions and whom it absorbed.
local function read_dump(loser, now, ret)
  local dump = {p = redis.call('HGETALL', ck(loser, K.PROFILE)), fams = {}, calls = {}, seen = {}}
  for i, fam in ipairs(FAMILIES) do
    if fam.keep == 'heaviest' then
      dump.fams[i] = redis.call('ZRANGE', ck(loser, fam.key), 0, -1, 'WITHSCORES')
    else
      dump.fams[i] = redis.call('ZRANGE', ck(loser, fam.key), 0, -1)
    end
  end
  for _, s in ipairs({K.IDS, K.ID_HASHES, K.ACCOUNTS, K.MERGED}) do
    dump[s] = redis.call('SMEMBERS', ck(loser, s))
  end
  for i = 1, 2 do dump.seen[i] = seen_blob(loser, now, ret, i) end
  dump.pending = redis.call('HGETALL', ck(loser, K.PENDING))
  for _, call in ipairs(redis.call('SMEMBERS', ck(loser, K.CALLS))) do
    local from = ck(loser, CALL_KEY .. call)
    table.insert(dump.calls, {call, redis.call('HGETALL', from), redis.call('PTTL', from)})
  end
  return dump
end

-- A loser's dump into the survivor `cid` with the typed operations a delta uses, so
-- merging in any order gives the same content; writes only the survivor's keys. Costs
-- in proportion to the loser's size (merges are rare).
local function merge_dump(loser, dump, now, ret)
  for i = 1, #dump.p, 2 do
    if dump.p[i] == F.AMOUNT then move_spend(tonumber(dump.p[i + 1]), nil) end
  end
  for i = 1, #dump.p, 2 do combine(dump.p[i], dump.p[i + 1]) end
  for i, fam in ipairs(FAMILIES) do
    local members = dump.fams[i]
    if fam.keep == 'heaviest' then
      for j = 1, #members, 2 do
        family_add(fam, fam.prefix .. members[j], -tonumber(members[j + 1]))
      end
    elseif fam.keep == 'since_calm' then
      for _, order in ipairs(members) do family_add(fam, fam.prefix .. order, '1') end
    else
      for _, member in ipairs(members) do
        local suffix, value = string.match(member, '^([^\31]*)\31(.*)$')
        family_add(fam, fam.prefix .. suffix, value)
      end
    end
  end
  for _, id in ipairs(dump.ids) do add_identifier(id) end
  for _, h in ipairs(dump.idh) do redis.call('SADD', ck(cid, K.ID_HASHES), h) end
  -- the survivor holds the loser's accounts (with the roles, merged as registers above)
  for _, acct in ipairs(dump.accts) do
    if redis.call('SADD', ck(cid, K.ACCOUNTS), acct) == 1 then table.insert(links_added, acct) end
  end
  local into = seen_bases(cid, now, ret)
  for i, blob in ipairs(dump.seen) do
    if blob ~= '' then add_seen(into[i], blob, ret) end
  end
  for i = 1, #dump.pending, 2 do
    redis.call('HSETNX', ck(cid, K.PENDING), dump.pending[i], dump.pending[i + 1])
  end
  -- live call sessions follow the customer (a merge mid-call keeps its advice)
  for _, c in ipairs(dump.calls) do
    local call, session, ttl = c[1], c[2], c[3]
    local to = ck(cid, CALL_KEY .. call)
    for i = 1, #session, 2 do redis.call('HSETNX', to, session[i], session[i + 1]) end
    if ttl > 0 and redis.call('PTTL', to) < ttl then redis.call('PEXPIRE', to, ttl) end
    redis.call('SADD', ck(cid, K.CALLS), call)
  end
  redis.call('SADD', ck(cid, K.MERGED), loser, unpack(dump.merged))
end

-- a loser's keys, but for the redirect to its survivor
local function drop_loser(loser, now, ret)
  for _, call in ipairs(redis.call('SMEMBERS', ck(loser, K.CALLS))) do
    redis.call('DEL', ck(loser, CALL_KEY .. call))
  end
  drop_seen(loser, now, ret)
  delete_customer(loser, true)
end

-- standalone: the merge whole, in this script (every key is local)
local function merge(loser, now, ret)
  local dump = read_dump(loser, now, ret)
  merge_dump(loser, dump, now, ret)
  for _, acct in ipairs(dump.accts) do
    local a = account_of(acct)
    redis.call('SREM', ck(a, K.PEOPLE), loser)
    redis.call('SADD', ck(a, K.PEOPLE), cid)
  end
  for _, m in ipairs(dump.merged) do redis.call('SET', ck(m, K.REDIRECT), cid) end
  redis.call('SET', ck(loser, K.REDIRECT), cid)
  drop_loser(loser, now, ret)
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
  local key = ck(cid, CALL_KEY .. call.id)
  redis.call('SADD', ck(cid, K.CALLS), call.id)
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
  for _, k in ipairs({key, ck(cid, K.CALLS)}) do redis.call('PEXPIRE', k, call.ttl) end
  return prompt
end

-- identity rules ------------------------------------------------------------------------
--
-- Person identifiers resolve through the index, within the limits per kind (LIMITS):
-- the identifiers of kinds limited to one that no one holds yet are claimed first (they
-- say who the event is about), then those that find people, then the other new ones.
-- A person joins the event's survivor only if every kind stays within its limit
-- together; an identifier that would break a limit is rejected ('conflict' for a kind
-- limited to one, else 'limit') and neither resolves nor merges.

local function kind_of(id) return string.match(id, '^([^:]*):') end

-- The identity rules: the people an event's identifiers join (in the order found), the
-- identifiers it may use, and a rejection for each it may not. ``owner``: each
-- identifier's person; ``held_of(c)``: person c's identifiers. On a standalone Redis
-- the script reads both itself; on a Redis Cluster the caller reads them (other slots)
-- and asks this same function (the ``rule`` step).
local function resolve(ids, owner, held_of)
  local found, usable, holding = {}, {}, {}
  local function fits(extra)
    for k, set in pairs(extra) do
      local limit = LIMITS[k]
      if limit then
        local n, mine = 0, holding[k] or {}
        for _ in pairs(mine) do n = n + 1 end
        for id, _ in pairs(set) do if not mine[id] then n = n + 1 end end
        if n > limit then
          if limit == 1 then return 'conflict' end
          return 'limit'
        end
      end
    end
    return nil
  end
  local function take(extra)
    for k, set in pairs(extra) do
      holding[k] = holding[k] or {}
      for id, _ in pairs(set) do holding[k][id] = true end
    end
  end
  local is_found = {}
  local only, one = nil, true  -- one: every identifier already belongs to one person
  for _, id in ipairs(ids) do
    local c = owner[id]
    if (not c) or (only and c ~= only) then one = false end
    only = only or c
  end
  if one and only then return {only}, ids end  -- the usual event: nothing to check
  local function try(id, extra, person)
    local why = fits(extra)
    if why then
      table.insert(rejections, kind_of(id) .. US .. why)
      return
    end
    take(extra)
    table.insert(usable, id)
    if person then
      is_found[person] = true
      table.insert(found, person)
    end
  end
  local function new_id(id) return {[kind_of(id)] = {[id] = true}} end
  for _, id in ipairs(ids) do  -- 1. unclaimed identifiers of kinds limited to one
    if not owner[id] and LIMITS[kind_of(id)] == 1 then try(id, new_id(id)) end
  end
  for _, id in ipairs(ids) do  -- 2. identifiers that find people
    local c = owner[id]
    if c and is_found[c] then
      table.insert(usable, id)
    elseif c then
      local held = {}
      for _, h in ipairs(held_of(c)) do
        local k = kind_of(h)
        held[k] = held[k] or {}
        held[k][h] = true
      end
      try(id, held, c)
    end
  end
  for _, id in ipairs(ids) do  -- 3. the other new identifiers
    if not owner[id] and LIMITS[kind_of(id)] ~= 1 then try(id, new_id(id)) end
  end
  return found, usable
end

local function held_here(c) return redis.call('SMEMBERS', ck(c, K.IDS)) end

-- the person the others merge into: the first seen (the smaller id on a tie)
local function survivor_of(found, newcid, first_seen_of)
  if #found == 0 then return newcid end
  local survivor = found[1]
  for i = 2, #found do
    local c = found[i]
    local fc, fs = first_seen_of(c), first_seen_of(survivor)
    if fc < fs or (fc == fs and c < survivor) then survivor = c end
  end
  return survivor
end

-- whom an erasure erases: the people its identifiers find (``owners``, in order, nil
-- for none), and for each account it names the one person who holds it (never several)
local function erasure_targets(owners, account_people)
  local found, is_found = {}, {}
  local function add(c)
    if c and not is_found[c] then
      is_found[c] = true
      table.insert(found, c)
    end
  end
  for _, c in ipairs(owners) do add(c) end
  for _, people in ipairs(account_people) do
    if #people == 1 then add(people[1]) end
  end
  return found
end

-- an event of an erased person that happened before the erasure is dropped; the people
-- its identifiers find (``people``) who were first seen before the erasure are the
-- erased person's too (their events arrived first), so they go the same way
local function suppressed_people(people, erasure, first_seen_of)
  local gone, seen_person = {}, {}
  for _, c in ipairs(people) do
    if not seen_person[c] and first_seen_of(c) < erasure then
      seen_person[c] = true
      table.insert(gone, c)
    end
  end
  return gone
end

-- one event -------------------------------------------------------------------------

-- an entity's state in memory, changes and views reset
local function begin(entity)
  cid = entity
  cur, old, dirty, ids_added = {}, {}, {}, {}
  added, touched, oldest = {}, {}, {}
  links_added = {}
  local flat = redis.call('HGETALL', ck(cid, K.PROFILE))
  for i = 1, #flat, 2 do cur[flat[i]] = flat[i + 1] end
end

-- the delta's fields onto the entity in memory, then written (families and the hash)
local function apply_fields(d)
  keep_extreme(F.FIRST_SEEN, d.ts, true)
  keep_extreme(F.LAST_SEEN, d.ts, false)
  family_prefetch(d.fields)
  for f, v in pairs(d.fields) do combine(f, v) end
  for _, r in ipairs(rejections) do
    local kind, why = string.match(r, '^([^\31]*)\31(.*)$')
    add_int(REJECTED .. kind .. ':' .. why, 1)
  end
  add_int(F.VERSION, 1)
end

local function write_entity()
  for _, fam in ipairs(FAMILIES) do family_cap(fam) end
  if dirty[CALM] then
    -- negatives up to the latest calm message no longer count towards the streak
    redis.call('ZREMRANGEBYLEX', ck(cid, NEGATIVES.key), '-', '[' .. cur[CALM])
  end
  -- written in slices: unpack() has a limit, and a merge can dirty many fields
  local writes = {}
  for f, _ in pairs(dirty) do
    writes[#writes + 1] = f
    writes[#writes + 1] = cur[f]
    if #writes >= 1000 then
      redis.call('HSET', ck(cid, K.PROFILE), unpack(writes))
      writes = {}
    end
  end
  if #writes > 0 then redis.call('HSET', ck(cid, K.PROFILE), unpack(writes)) end
end

local function pairs_text(flat) return table.concat(flat, US) end

-- employees with an active friend or group relation to a person (processors/
-- relationships.py connected_employees), into the set `into`
local function connected(person, into)
  local flat = redis.call('HGETALL', ck(person, K.PROFILE))
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    if string.sub(v, -6) == '\tadded' then
      if string.sub(f, 1, #FRIEND) == FRIEND then
        into[string.sub(f, #FRIEND + 1)] = true
      elseif string.sub(f, 1, #GROUP) == GROUP then
        into[string.sub(f, #GROUP + 1, -10)] = true
      end
    end
  end
end

local function sorted_keys(set)
  local out = {}
  for k, _ in pairs(set) do table.insert(out, k) end
  table.sort(out)
  return out
end

-- an account's people (customer id US role register, '' without a role, for each) and
-- the employees connected to any of them
local function people_of(acct)
  local out, notify = {}, {}
  for _, person in ipairs(redis.call('SMEMBERS', ck(account_of(acct), K.PEOPLE))) do
    table.insert(out, person)
    table.insert(out, redis.call('HGET', ck(person, K.PROFILE), ROLE .. acct) or '')
    connected(person, notify)
  end
  return pairs_text(out), table.concat(sorted_keys(notify), US)
end

-- a person's accounts for the answer: number VS account hash VS people VS notify (the
-- people and notify only for the accounts the event named), one after another by MS
local function accounts_of(person, named)
  local out = {}
  for _, acct in ipairs(redis.call('SMEMBERS', ck(person, K.ACCOUNTS))) do
    local people, notify = '', ''
    if named[acct] then people, notify = people_of(acct) end
    local hash = redis.call('HGETALL', ck(account_of(acct), K.PROFILE))
    table.insert(out, table.concat({acct, pairs_text(hash), people, notify}, VS))
  end
  return table.concat(out, MS)
end

-- A pending answer is kept as the answer itself ('ok' RS cid RS body; before: cid RS
-- body): as a redelivery's answer ('dup' RS cid RS body), and its body alone.
local OK = S.OK .. RS
local function as_dup(pending)
  if string.sub(pending, 1, 3) == OK then return S.DUP .. string.sub(pending, 3) end
  return S.DUP .. RS .. pending
end
local function pending_body(pending)
  if string.sub(pending, 1, 3) == OK then return string.match(pending, '^ok\30[^\30]*\30(.*)$') end
  return string.match(pending, '^[^\30]*\30(.*)$')
end

-- The answer ('ok' RS cid RS body): the bounded hash, each family's view, what changed,
-- the links. Built as one string, kept pending as it is: a mature customer's answer is
-- kilobytes, and each copy of it costs the script more than most of its commands.
local function answer(d, losers, streak_before, prompt, links, notify)
  local views = {}
  for i, fam in ipairs(FAMILIES) do
    views[i] = ''
    if touched[fam.view] or fam.keep ~= 'newest' or d.whole then views[i] = family_view(fam) end
    if fam.keep == 'since_calm' and views[i] ~= streak_before then
      old[NEGATIVE_STREAK] = streak_before
    end
  end
  local after, before, n = {}, {}, 0
  for f, v in pairs(cur) do
    after[n + 1], after[n + 2], n = f, v, n + 2
  end
  n = 0
  for f, v in pairs(old) do
    before[n + 1], before[n + 2], n = f, v, n + 2
  end
  local full = table.concat({
    S.OK,
    cid,
    table.concat(losers, US),
    table.concat(ids_added, US),
    table.concat(redis.call('SMEMBERS', ck(cid, K.IDS)), US),
    table.concat(after, US),
    table.concat(before, US),
    prompt,
    table.concat(views, VS),
    links,
    table.concat(links_added, US),
    table.concat(rejections, US),
    notify or '',
  }, RS)
  -- kept with the id it was applied to: a redelivery after a merge re-emits the
  -- outputs as they were (same ids, same content), not as the survivor's
  redis.call('HSET', ck(cid, K.PENDING), d.eid, full)
  return full
end

local function remember(d, hash)
  add_seen(seen_bases(cid, d.now, d.ret)[1], hash, d.ret)
end

-- global counters an applied event adds to (once per event id): phase × product
-- statistics from feedback; group analysis (the event's keywords and intent counted into
-- its time window)
local function count_globals(d)
  local stats = d.stats and next(d.stats) ~= nil and d.stats or nil
  if stats or d.trend then record_globals({stats = stats, trend = d.trend}) end
end

-- An event with no person identifier applies to each account it names (its stats,
-- trail and indicators); answered 'acct' RS (number RS body) for each, by ES.
local function apply_accounts(d, hash)
  for _, acct in ipairs(d.accts) do
    local a = account_of(acct)
    if has_seen(a, hash, d.now, d.ret) then
      local bodies = {}
      for _, other in ipairs(d.accts) do
        local pending = redis.call('HGET', ck(account_of(other), K.PENDING), d.eid)
        if pending then
          table.insert(bodies, other .. RS .. pending_body(pending))
        end
      end
      if #bodies == 0 then return S.DUP .. RS .. a end
      return S.DUP .. RS .. S.ACCOUNTS .. RS .. table.concat(bodies, ES)
    end
  end
  local bodies = {}
  for _, acct in ipairs(d.accts) do
    begin(account_of(acct))
    local streak_before = tostring(redis.call('ZCARD', ck(cid, NEGATIVES.key)))
    local spend_before = tonumber(cur[F.AMOUNT])
    apply_fields(d)
    move_spend(spend_before, tonumber(cur[F.AMOUNT]), ACCOUNT_SPEND)
    write_entity()
    remember(d, hash)
    if not d.quiet then
      local people, notify = '', ''  -- cluster: the people are the caller's to add
      if not CLUSTER then people, notify = people_of(acct) end
      local answered = answer(d, {}, streak_before, '', people, notify)
      table.insert(bodies, acct .. RS .. pending_body(answered))  -- its body, as a dup's
    end
  end
  if not (CLUSTER and d.later) then count_globals(d) end  -- cluster: one account's call counts
  if d.quiet then return S.OK .. RS .. account_of(d.accts[1]) end
  return S.ACCOUNTS .. RS .. table.concat(bodies, ES)
end

-- cluster ------------------------------------------------------------------------------
--
-- The steps of state/cluster.py that must be atomic, each on one hash slot.
-- A merge there: fence the survivor, seal each loser (its redirect is set, so nothing
-- applies to it any more, and its dump is answered), absorb the dumps into the survivor
-- (once per seal: the 'absorbed' set), then re-point the index and drop the loser.

-- a sealed loser's dump into the survivor in memory (cid), once per seal
local function absorb(a, now, ret)
  local mark = a.cid .. '|' .. a.seal
  if redis.call('SISMEMBER', ck(cid, K.ABSORBED), mark) == 1 then return false end
  local dump = a.dump
  dump.seen = {unhex(dump.seen[1] or ''), unhex(dump.seen[2] or '')}
  merge_dump(a.cid, dump, now, ret)
  redis.call('SADD', ck(cid, K.ABSORBED), mark)
  return true
end

-- global increments of this call kept with the entity until the stripe step took them
local function keep_globals(entity, once)
  if not gacc then return '' end
  local text = cjson.encode(gacc)
  redis.call('HSET', ck(entity, K.KEPT_GLOBALS), once, text)
  redis.call('PEXPIRE', ck(entity, K.KEPT_GLOBALS), 2 * 86400000)
  gacc = nil
  return text
end

-- the absorbs of a call into `cid` (begun, written by the caller): the losers absorbed;
-- their global increments kept under each seal's own id
local function absorb_all(d)
  local done = {}
  for _, a in ipairs(d.absorb or {}) do
    local before = tonumber(cur[F.AMOUNT])
    gacc = nil
    if absorb(a, d.now, d.ret) then
      table.insert(done, a.cid)
      move_spend(before, tonumber(cur[F.AMOUNT]))
      keep_globals(cid, 'm:' .. a.cid .. '|' .. a.seal)
    end
  end
  return done
end

local function is_live(c)
  return redis.call('EXISTS', ck(c, K.REDIRECT)) == 0 and redis.call('EXISTS', ck(c, K.PROFILE)) == 1
end

-- the event on the person the caller resolved (d.survivor; a new one: d.newcid), after
-- the dumps of the losers it sealed; identifiers claimed and rules applied by the caller
local function apply_cluster(d, hash)
  if d.survivor and not is_live(d.survivor) then return S.MOVED end
  begin(d.survivor or d.newcid)
  if not d.survivor then redis.call('DEL', ck(cid, K.REDIRECT)) end
  local streak_before = tostring(redis.call('ZCARD', ck(cid, NEGATIVES.key)))
  local losers = absorb_all(d)
  if has_seen(cid, hash, d.now, d.ret) then
    if #losers > 0 then write_entity() end
    local pending = redis.call('HGET', ck(cid, K.PENDING), d.eid)
    if pending then return as_dup(pending) end
    return S.DUP .. RS .. cid
  end
  local spend_before = tonumber(cur[F.AMOUNT])
  local hash_of = {}
  for i, id in ipairs(d.ids) do hash_of[id] = (d.idh or {})[i] end
  for _, id in ipairs(d.usable or {}) do add_identifier(id, hash_of[id]) end
  rejections = d.rejections or {}
  apply_fields(d)
  move_spend(spend_before, tonumber(cur[F.AMOUNT]))
  write_entity()
  for _, acct in ipairs(d.accts) do
    if redis.call('SADD', ck(cid, K.ACCOUNTS), acct) == 1 then table.insert(links_added, acct) end
  end
  local prompt = ''
  if d.call then prompt = call_event(cid, d.call, d.ts) end
  count_globals(d)
  remember(d, hash)
  if d.quiet then return S.OK .. RS .. cid end
  -- the accounts held, their hashes and people left to the caller (other slots)
  local held = {}
  for _, acct in ipairs(redis.call('SMEMBERS', ck(cid, K.ACCOUNTS))) do
    table.insert(held, table.concat({acct, '', '', ''}, VS))
  end
  return answer(d, losers, streak_before, prompt, table.concat(held, MS))
end

local function seal(d)
  local red = redis.call('GET', ck(d.cid, K.REDIRECT))
  if red and red ~= d.into then return 'sealed' .. RS .. red end
  if redis.call('EXISTS', ck(d.cid, K.PROFILE)) == 0 then return S.GONE end
  if not red then
    if (tonumber(redis.call('GET', ck(d.cid, K.FENCE))) or 0) > d.token then return S.FENCED end
    redis.call('SET', ck(d.cid, K.REDIRECT), d.into)
    redis.call('SET', ck(d.cid, K.FENCE), d.token)
    redis.call('SET', ck(d.cid, K.SEAL), d.token)
  end
  local dump = read_dump(d.cid, d.now, d.ret)
  dump.seen = {hex(dump.seen[1]), hex(dump.seen[2])}
  return S.DUMP .. RS .. redis.call('GET', ck(d.cid, K.SEAL)) .. RS .. cjson.encode(dump)
end

local function fence(d)
  local red = redis.call('GET', ck(d.cid, K.REDIRECT))
  if red then return 'sealed' .. RS .. red end
  if (tonumber(redis.call('GET', ck(d.cid, K.FENCE))) or 0) > d.token then return S.FENCED end
  redis.call('SET', ck(d.cid, K.FENCE), d.token)
  return S.OK
end

-- what an erasure must clean beyond the person's own slot
local function facts(d)
  if redis.call('EXISTS', ck(d.cid, K.PROFILE)) == 0 then return S.GONE end
  local agents = {}
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', ck(d.cid, K.PROFILE), cursor, 'MATCH', MET .. '*', 'COUNT', 500)
    cursor = page[1]
    for i = 1, #page[2], 2 do table.insert(agents, string.sub(page[2][i], #MET + 1)) end
  until cursor == '0'
  local amount = tonumber(redis.call('HGET', ck(d.cid, K.PROFILE), F.AMOUNT))
  local out = {agents = agents, bucket = amount and spend_bucket(amount) or ''}
  for _, s in ipairs({K.IDS, K.ID_HASHES, K.ACCOUNTS, K.MERGED}) do out[s] = redis.call('SMEMBERS', ck(d.cid, s)) end
  return S.FACTS .. RS .. cjson.encode(out)
end

-- the cluster protocol's own steps (state/cluster.py runs them, one slot at a time)
local CLUSTER_OPS = {seal = seal, fence = fence, facts = facts}

function CLUSTER_OPS.absorb(d)  -- an interrupted merge completed without an event
  if not is_live(d.survivor) then return S.MOVED end
  begin(d.survivor)
  if #absorb_all(d) > 0 then write_entity() end
  return S.OK
end

function CLUSTER_OPS.drop(d)  -- a sealed loser once absorbed, or an erased person (d.all)
  if d.all then
    for _, call in ipairs(redis.call('SMEMBERS', ck(d.cid, K.CALLS))) do
      redis.call('DEL', ck(d.cid, CALL_KEY .. call))
    end
    drop_seen(d.cid, d.now, d.ret)
    delete_customer(d.cid, false)
    return S.OK
  end
  if redis.call('EXISTS', ck(d.cid, K.REDIRECT)) == 0 then return S.LIVE end
  drop_loser(d.cid, d.now, d.ret)
  return S.OK
end

function CLUSTER_OPS.link(d)  -- a person onto an account (instead of `from`, after a merge)
  local a = account_of(d.acct)
  if d.from then redis.call('SREM', ck(a, K.PEOPLE), d.from) end
  redis.call('SADD', ck(a, K.PEOPLE), d.cid)
  if d.eid then  -- an account's version counts the events that name it, once each
    local h = id_hash(d.eid)
    if not has_seen(a, h, d.now, d.ret) then
      redis.call('HINCRBY', ck(a, K.PROFILE), F.VERSION, 1)
      cid = a
      remember(d, h)
    end
  end
  return S.OK
end

function CLUSTER_OPS.unlink(d)  -- an erased person off an account; an account left empty goes
  local a = account_of(d.acct)
  redis.call('SREM', ck(a, K.PEOPLE), d.cid)
  gacc = nil
  if redis.call('SCARD', ck(a, K.PEOPLE)) == 0 then drop_account(a, d.now, d.ret) end
  if not gacc then return S.OK end
  local moved = cjson.encode(gacc)  -- its spend bucket, for the caller's stripe step
  gacc = nil
  return S.OK .. RS .. moved
end

function CLUSTER_OPS.index(d)  -- compare and set (or delete) one identifier's person
  local v = redis.call('GET', idxk(d.id))
  if v == d.from then
    if d.to then redis.call('SET', idxk(d.id), d.to) else redis.call('DEL', idxk(d.id)) end
  end
  return v or ''
end

function CLUSTER_OPS.suppress(d)
  suppress(d.h, d.ts, d.ttl)
  return S.OK
end

function CLUSTER_OPS.forget_agent(d)
  local agent = P .. AGENT .. '{' .. d.agent .. '}'
  if redis.call('HGET', agent, 'customer_id') == d.cid then redis.call('DEL', agent) end
  return S.OK
end

function CLUSTER_OPS.globals(d)  -- a stripe's share of the global counters, once per id
  -- the ids a stripe counted, in one hash per hour (this one and the last are checked):
  -- O(1) per id, whatever the history; the caller forgets the kept increments right
  -- after this call, so only a crash in between, redelivered hours later, counts twice
  local base = P .. '{' .. d.stripe .. '}:'
  local hour = math.floor(d.now / 3600000)
  local done = base .. G.ONCE .. string.format('%d', hour)
  local before = base .. G.ONCE .. string.format('%d', hour - 1)
  local fresh = {}
  for _, item in ipairs(d.items) do
    local h = id_hash(item[1])
    if redis.call('HSETNX', done, h, '') == 1 and redis.call('HEXISTS', before, h) == 0 then
      table.insert(fresh, item[2])
    end
  end
  add_globals_summed(base, fresh)
  redis.call('PEXPIRE', done, 2 * 3600000)
  return S.OK
end

-- the rules a Redis Cluster caller asks for, over what it read from other slots (the
-- same functions a standalone event runs): the answer as JSON
local RULES = {}

function RULES.resolve(d)  -- several events at once: {ids, owner, held} each
  local answers = {}
  for _, e in ipairs(d.events) do
    rejections = {}
    local held = e.held or {}
    local found, usable = resolve(e.ids, e.owner or {}, function(c) return held[c] or {} end)
    table.insert(answers, {found = found, usable = usable, rejections = rejections})
  end
  rejections = {}
  return {answers = answers}
end

-- the caller's first-seen times, as the rules read them (none known: never seen)
local function first_seen_sent(d)
  return function(c) return d.first_seen[c] or math.huge end
end

function RULES.survivor(d)
  return {survivor = survivor_of(d.found, d.newcid, first_seen_sent(d))}
end

function RULES.erasure(d)
  local owners = {}
  for i = 1, #d.ids do table.insert(owners, d.owners[d.ids[i]]) end
  return {found = erasure_targets(owners, d.account_people)}
end

function RULES.suppressed(d)
  return {gone = suppressed_people(d.people, d.erasure, first_seen_sent(d))}
end

function CLUSTER_OPS.rule(d)
  return cjson.encode(RULES[d.rule](d))
end

local function cluster_op(d)
  local step = CLUSTER_OPS[d.op]
  if not step then error('unknown op ' .. tostring(d.op)) end
  return step(d)
end

-- an erasure command: every person its identifiers and accounts name, and the named
-- identifiers suppressed (a redelivery answers what it erased, so its notices go out again)
local function apply_erasure(d)
  local tomb = P .. G.ERASURE .. d.eid
  local done = redis.call('GET', tomb)
  if done == '' then return S.DUP end  -- its notices were delivered
  if done then return S.DUP .. RS .. S.ERASED .. RS .. done end
  local owners, account_people = {}, {}
  for _, id in ipairs(d.ids) do table.insert(owners, redis.call('GET', idxk(id))) end
  for _, acct in ipairs(d.accts) do
    table.insert(account_people, redis.call('SMEMBERS', ck(account_of(acct), K.PEOPLE)))
  end
  local found = erasure_targets(owners, account_people)
  -- the named identifiers are suppressed even when no one holds them yet (an erasure
  -- can arrive before the events it erases, from another partition)
  local ttl = math.max(d.supttl or d.ret, 1)
  for _, h in ipairs(d.idh or {}) do suppress(h, d.ts, ttl) end
  for _, c in ipairs(found) do erase_person(c, d.ts, ttl, d.now, d.ret) end
  local erased = table.concat(found, US)
  redis.call('SET', tomb, erased, 'PX', math.max(d.ret, 1))
  if #found == 0 then return S.NOOP end
  return S.ERASED .. RS .. erased
end

-- one step of an event on a Redis Cluster: the entity's own keys, and the global figures
-- the step moved (kept for a redelivery of the same step)
local function apply_cluster_step(d, hash)
  local entity = d.survivor or d.newcid
  local answered
  if #d.ids == 0 then
    entity = account_of(d.accts[1])
    answered = apply_accounts(d, hash)
  else
    answered = apply_cluster(d, hash)
  end
  local kept = keep_globals(entity, d.eid)
  if kept == '' and string.sub(answered, 1, 3) == S.DUP then
    kept = redis.call('HGET', ck(entity, K.KEPT_GLOBALS), d.eid) or ''
  end
  return {answered, kept}
end

-- a redelivery is recognised by any person its identifiers find, rules aside: its
-- answer, or nil for a new event
local function redelivered(d, owner, hash)
  local checked = {}
  for _, id in ipairs(d.ids) do
    local c = owner[id]
    if c and not checked[c] then
      checked[c] = true
      if has_seen(c, hash, d.now, d.ret) then
        local pending = redis.call('HGET', ck(c, K.PENDING), d.eid)
        if pending then return as_dup(pending) end
        return S.DUP .. RS .. c
      end
    end
  end
  return nil
end

-- an erased person's event from before the erasure (suppressed_people); nil when it is
-- not such
local function suppressed(d, owner)
  local erasure = erased_at(d.idh or {})
  if not (erasure and d.ts < erasure) then return nil end
  local ttl = math.max(d.supttl or d.ret, 1)
  local people = {}
  for _, id in ipairs(d.ids) do
    if owner[id] then table.insert(people, owner[id]) end
  end
  local gone = suppressed_people(people, erasure, first_seen)
  for _, h in ipairs(d.idh) do suppress(h, erasure, ttl) end
  for _, c in ipairs(gone) do erase_person(c, erasure, ttl, d.now, d.ret) end
  return S.SUPPRESSED .. RS .. table.concat(gone, US)
end

-- links to the accounts the event names (an account's version counts the events that
-- name it); the accounts named, for the answer
local function link_accounts(d)
  local named = {}
  for _, acct in ipairs(d.accts) do
    named[acct] = true
    local a = account_of(acct)
    if redis.call('SADD', ck(cid, K.ACCOUNTS), acct) == 1 then table.insert(links_added, acct) end
    redis.call('SADD', ck(a, K.PEOPLE), cid)
    redis.call('HINCRBY', ck(a, K.PROFILE), F.VERSION, 1)
  end
  for _, acct in ipairs(links_added) do named[acct] = true end
  return named
end

local function apply_one(raw)
  local d = cjson.decode(raw)
  rejections = {}
  gacc = nil
  d.accts = d.accts or {}
  if CLUSTER and d.op then return cluster_op(d) end
  if d.erase then return apply_erasure(d) end

  local hash = id_hash(d.eid)
  if CLUSTER then return apply_cluster_step(d, hash) end
  if #d.ids == 0 then return apply_accounts(d, hash) end

  -- each identifier's person, read once for the checks below and the resolution
  local owner = {}
  for _, id in ipairs(d.ids) do owner[id] = redis.call('GET', idxk(id)) end
  local early = redelivered(d, owner, hash) or suppressed(d, owner)
  if early then return early end

  local found, usable = resolve(d.ids, owner, held_here)
  begin(survivor_of(found, d.newcid, first_seen))
  if #found == 0 then redis.call('DEL', ck(cid, K.REDIRECT)) end
  local losers = {}
  local spend_before = tonumber(cur[F.AMOUNT])
  local streak_before = tostring(redis.call('ZCARD', ck(cid, NEGATIVES.key)))
  for _, c in ipairs(found) do
    if c ~= cid then
      merge(c, d.now, d.ret)
      table.insert(losers, c)
    end
  end

  local hash_of = {}
  for i, id in ipairs(d.ids) do hash_of[id] = (d.idh or {})[i] end
  for _, id in ipairs(usable) do add_identifier(id, hash_of[id]) end
  apply_fields(d)
  move_spend(spend_before, tonumber(cur[F.AMOUNT]))
  write_entity()
  local named = link_accounts(d)

  local prompt = ''
  if d.call then prompt = call_event(cid, d.call, d.ts) end
  count_globals(d)
  remember(d, hash)
  -- replay: state only, no outputs to build or keep pending
  if d.quiet then return S.OK .. RS .. cid end
  return answer(d, losers, streak_before, prompt, accounts_of(cid, named))
end

local function stale_position(positions)
  for _, part in ipairs(positions.parts) do
    local stored = redis.call('HGET', positions.key, part[1])
    if stored ~= part[2] then
      local sg, so = string.match(stored or '', '^(%-?%d+):(%-?%d+)$')
      local eg, eo = string.match(part[2], '^(%-?%d+):(%-?%d+)$')
      if not (sg and sg == eg and tonumber(so) >= tonumber(eo)) then
        return part[1] .. ' ' .. (stored or 'none') .. ' ' .. part[2]
      end
    end
  end
end

-- Above: the set-up; below: each call (the library runs the set-up once: scripts.py).
--@CALL@
local positions = ARGV[3] ~= '' and cjson.decode(ARGV[3]) or nil
if positions then
  local stale = stale_position(positions)
  if stale then
    return redis.error_reply('STALE_OFFSETS ' .. stale)
  end
  if positions.check then return {} end  -- cluster: checked before the chunk's steps
end
local answers = {}
for i = 4, #ARGV do
  local ok, answer = pcall(apply_one, ARGV[i])
  if ok then
    answers[#answers + 1] = answer
  else
    answers[#answers + 1] = S.ERROR .. RS .. tostring(answer)
  end
end
if positions then
  for _, part in ipairs(positions.parts) do
    redis.call('HSET', positions.key, part[1], part[3])
  end
end
return answers
