-- Publish at most once: set marker KEYS[1] (expiring in ARGV[1] seconds) and LPUSH payload
-- ARGV[2] to every list KEYS[2..]; when the marker already exists, push nothing. Returns 1 when
-- pushed, 0 when it had been published already.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return 0
end
for i = 2, #KEYS do
  redis.call('LPUSH', KEYS[i], ARGV[2])
end
return 1
