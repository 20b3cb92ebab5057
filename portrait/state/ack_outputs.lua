-- Forget the pending outputs of events whose outputs are now confirmed delivered.
--
-- ARGV[1]: key prefix; ARGV[2]: customer id the events were applied to;
-- ARGV[3..]: event ids. Follows merge redirects, since the customer may have been
-- merged into another one since. Returns the number of entries removed.

local P = ARGV[1]
local cid = ARGV[2]
for _ = 1, 16 do
  local nxt = redis.call('GET', P .. 'c:{' .. cid .. '}:redirect')
  if not nxt then break end
  cid = nxt
end
local removed = 0
for i = 3, #ARGV do
  removed = removed + redis.call('HDEL', P .. 'c:{' .. cid .. '}:pending', ARGV[i])
end
return removed
