-- Compare-and-settle one unacked message: only when the unacked hash still holds exactly the
-- value the caller read (so an ack, a restore by another worker or a re-delivery in between
-- wins), remove it from unacked/unacked_index and optionally push a payload.
--
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] dead-letter list, KEYS[4] dead-letter reasons,
-- KEYS[5..] target lists.
-- ARGV[1] delivery tag, ARGV[2] expected hash value, ARGV[3] mode: 'drop' | 'lpush' | 'rpush' |
-- 'dead', ARGV[4] payload, ARGV[5] highest delivery time allowed ('' = any; the sweep's ceiling),
-- ARGV[6..9] for 'dead': reason, queue, task, id.
-- Returns 1 when settled, 0 when the message was not (or no longer) held as expected.
local tag = ARGV[1]
if redis.call('HGET', KEYS[1], tag) ~= ARGV[2] then return 0 end
if ARGV[5] ~= '' then
  local score = redis.call('ZSCORE', KEYS[2], tag)
  if score and tonumber(score) > tonumber(ARGV[5]) then return 0 end
end
redis.call('ZREM', KEYS[2], tag)
redis.call('HDEL', KEYS[1], tag)
local mode = ARGV[3]
if mode == 'dead' then
  dead_letter(KEYS[3], KEYS[4], ARGV[4], ARGV[6], ARGV[7], tag, ARGV[8], ARGV[9])
elseif mode == 'lpush' or mode == 'rpush' then
  for i = 5, #KEYS do redis.call(mode, KEYS[i], ARGV[4]) end
end
return 1
