-- Atomic non-blocking fetch: pop up to ARGV[1] elements, priority-major across queues, and
-- record each good one in the unacked hash/index in the same step (so nothing is ever only in
-- the caller's memory). Elements that are not kombu envelopes go, intact, to the dead-letter list.
--
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] dead-letter list, KEYS[4] dead-letter reasons,
-- KEYS[5..] the queue lists, queue-major: queue i (1-based), step j -> KEYS[4 + (i-1)*nsteps + j].
-- ARGV[1] max elements, ARGV[2] nsteps, ARGV[3] max element length in bytes (0: no limit),
-- ARGV[4..] logical queue names in the same order.
--
-- Returns a flat array of strings, six per element taken:
--   delivered:     1, queue index, raw, delivery_tag, exchange, routing_key
--   dead-lettered: 0, queue index, reason, '', '', ''
local max = tonumber(ARGV[1])
local nsteps = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
local nqueues = #ARGV - 3
local order = {}
for i = 1, nqueues do order[i] = i end
local empty = {}
local now = now_text()
local out = {}
local taken = 0
-- The unacked records of this call, written together at the end (still inside this script, so
-- still atomic with the pops): one ZADD and one HSET per chunk instead of two commands a message.
local zadd, hset = {}, {}

local function str(v)
  if type(v) == 'string' then return v end
  return nil
end

-- The properties of an envelope whose last member is "properties" (kombu writes it last), decoded
-- alone instead of the whole envelope with its body and headers: the text from the last
-- '"properties":' to just before the closing '}' must be exactly one JSON object. A key of that
-- name inside a string is escaped, and one nested deeper leaves unbalanced braces, so neither
-- passes; then (or when anything is missing) the caller decodes the whole envelope.
local function trailing_properties(raw)
  if string.byte(raw, 1) ~= 123 or string.byte(raw, -1) ~= 125 then return nil end
  local at, from = nil, 1
  while true do
    local i = string.find(raw, '"properties":', from, true)
    if not i then break end
    at, from = i, i + 1
  end
  if not at then return nil end
  local open = string.find(raw, '{', at + 13, true)
  if not open or string.find(string.sub(raw, at + 13, open - 1), '%S') then return nil end
  local ok, props = pcall(cjson.decode, string.sub(raw, open, -2))
  if ok and type(props) == 'table' and type(props['delivery_tag']) == 'string'
      and props['delivery_tag'] ~= '' then
    return props
  end
  return nil
end

local function handle(qi, raw)
  local queue = ARGV[3 + qi]
  local reason, props, headers
  if max_bytes > 0 and #raw > max_bytes then
    -- Never parsed: Redis's JSON parser and the worker's memory are spared.
    reason = 'too large: message is ' .. #raw .. ' bytes, over the limit of ' .. max_bytes
  else
    props = trailing_properties(raw)
  end
  if not reason and not props then
    local ok, msg = pcall(cjson.decode, raw)
    if not ok then
      reason = 'not JSON'
    elseif type(msg) ~= 'table' then
      reason = 'not a JSON object'
    else
      props = msg['properties']
      headers = msg['headers']
      if type(headers) ~= 'table' then headers = {} end
      if type(props) ~= 'table' then
        reason = 'no properties object'
      elseif type(props['delivery_tag']) ~= 'string' or props['delivery_tag'] == '' then
        reason = 'no delivery_tag'
      end
    end
  end
  if reason then
    local tag = type(props) == 'table' and str(props['delivery_tag']) or nil
    dead_letter(KEYS[3], KEYS[4], raw, reason, queue, tag, headers and str(headers['task']),
      headers and str(headers['id']))
    table.insert(out, '0'); table.insert(out, tostring(qi)); table.insert(out, reason)
    table.insert(out, ''); table.insert(out, ''); table.insert(out, '')
    return
  end
  local tag = props['delivery_tag']
  local info = props['delivery_info']
  if type(info) ~= 'table' then info = {} end
  local exchange = str(info['exchange']) or ''
  local routing_key = str(info['routing_key']) or queue
  table.insert(zadd, now); table.insert(zadd, tag)
  table.insert(hset, tag)
  table.insert(hset, '[' .. raw .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(routing_key) .. ']')
  table.insert(out, '1'); table.insert(out, tostring(qi)); table.insert(out, raw)
  table.insert(out, tag); table.insert(out, exchange); table.insert(out, routing_key)
end

-- One queue (the usual case): whole runs per priority step with one RPOP <count> each, which
-- takes the same elements in the same order as popping them one by one. Redis before 6.2 has no
-- count argument; then the general loop below pops one at a time.
local counted = nqueues == 1
if counted then
  for s = 1, nsteps do
    if taken >= max then break end
    local got = redis.pcall('RPOP', KEYS[4 + s], max - taken)
    if type(got) == 'table' and got['err'] then
      counted = false
      break
    end
    if got then
      for _, raw in ipairs(got) do handle(1, raw) end
      taken = taken + #got
    end
  end
end

while not counted and taken < max do
  local got = false
  for s = 1, nsteps do
    for pos = 1, #order do
      local qi = order[pos]
      local k = 4 + (qi - 1) * nsteps + s
      if not empty[k] then
        local raw = redis.call('RPOP', KEYS[k])
        if raw then
          handle(qi, raw)
          table.remove(order, pos)
          table.insert(order, qi)
          got = true
          break
        end
        empty[k] = true
      end
    end
    if got then break end
  end
  if not got then break end
  taken = taken + 1
end
local CHUNK = 1000
for i = 1, #zadd, CHUNK do
  redis.call('ZADD', KEYS[2], unpack(zadd, i, math.min(i + CHUNK - 1, #zadd)))
  redis.call('HSET', KEYS[1], unpack(hset, i, math.min(i + CHUNK - 1, #hset)))
end
return out
