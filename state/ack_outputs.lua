-- Forget the pending outputs of events whose outputs are now confirmed delivered.
--
-- ARGV[1]: key prefix; then pairs ARGV[2k], ARGV[2k+1]: customer id the event was applied
-- to, event id. Follows merge redirects, since the customer may have been merged into
-- another one since. An empty customer id confirms an erasure's notices: its record
-- forgets the erased ids (kept only until then, so a redelivery could re-emit them).
-- One call per batch. Returns the number of entries removed.

local P = ARGV[1]
local live = {}
local removed = 0
for i = 2, #ARGV - 1, 2 do
  local cid = ARGV[i]
  if cid == '' then
    local tomb = P .. 'erasure:' .. ARGV[i + 1]
    if redis.call('EXISTS', tomb) == 1 then
      redis.call('SET', tomb, '', 'KEEPTTL')
      removed = removed + 1
    end
  else
    local target = live[cid]
    if not target then
      target = cid
      for _ = 1, 16 do
        local nxt = redis.call('GET', P .. 'c:{' .. target .. '}:redirect')
        if not nxt then break end
        target = nxt
      end
      live[cid] = target
    end
    removed = removed + redis.call('HDEL', P .. 'c:{' .. target .. '}:pending', ARGV[i + 1])
  end
end
return removed
