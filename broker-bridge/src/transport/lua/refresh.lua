-- Move the delivery time of messages still held to now (server clock), only for tags that are
-- still in the index (ZADD XX), so the visibility-timeout sweep leaves them alone.
-- KEYS[1] unacked_index; ARGV = delivery tags. Returns how many were refreshed.
local now = now_text()
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now, ARGV[i])
end
return n
