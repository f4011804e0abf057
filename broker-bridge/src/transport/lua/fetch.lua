-- Atomic non-blocking fetch: pop up to ARGV[1] elements, priority-major across queues, and
-- record each good one in the unacked hash/index in the same step (so nothing is ever only in
-- the caller's memory). Elements that are not kombu envelopes, or whose delivery tag is already
-- held by another message, go, intact, to the dead-letter list.
--
-- Redis keeps the writes a script made before a command failed, so no call here may fail after a
-- pop without a remedy: every command runs under pcall; popping stops at the first error, and when
-- recording what was popped fails (WRONGTYPE, NOPERM, OOM...) the records are taken back and every
-- popped element is pushed back where it was, then the error is returned. Nothing is lost.
--
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] dead-letter list, KEYS[4] dead-letter reasons,
-- KEYS[5..] the queue lists, queue-major: queue i (1-based), step j -> KEYS[4 + (i-1)*nsteps + j].
-- ARGV[1] max elements, ARGV[2] nsteps, ARGV[3] max element length in bytes (0: no limit),
-- ARGV[4] byte room (0: no limit): popping stops once the elements taken add up to it (the
-- first is always taken; elements of a run popped past it are pushed back in order),
-- ARGV[5..] logical queue names in the same order.
--
-- Returns a flat array of strings, six per element taken:
--   delivered:     1, queue index, raw, delivery_tag, exchange, routing_key
--   dead-lettered: 0, queue index, reason, '', '', ''
local max = tonumber(ARGV[1])
local nsteps = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
local room = tonumber(ARGV[4])
local nqueues = #ARGV - 4
local bytes = 0
local order = {}
for i = 1, nqueues do order[i] = i end
local empty = {}
local now = now_text()
local out, nout = {}, 0
local taken = 0
-- What each element popped became, in pop order: a dead letter {queue index, dead = reason,
-- letter = its dead_letter arguments}, or a message {queue index, raw, tag, exchange,
-- routing_key, record, queue, task, id} whose record is written with the others at the end
-- (still inside this script, so still atomic with the pops): one ZADD and one HSET per chunk
-- instead of two commands a message.
local items = {}
-- This call's distinct tags in order of first appearance, and the record each one took.
local tags, seen, records = {}, {}, {}
-- Dead letters of this call in pop order, written with the records: {raw, reason, queue, tag,
-- task, id}.
local dead = {}
-- Every element popped, in pop order: {key, raw}, to push back if recording fails.
local popped = {}

local pop_err = nil

local function failed(reply)
  return type(reply) == 'table' and reply['err'] ~= nil
end

local function str(v)
  if type(v) == 'string' then return v end
  return nil
end

-- The position of the last `needle` in `s` that starts at or after `from`, or nil.
local function last_find(s, needle, from)
  local at
  while true do
    local i = string.find(s, needle, from, true)
    if not i then return at end
    at, from = i, i + 1
  end
end

-- The properties of an envelope whose last member is "properties" (kombu writes it last), decoded
-- alone instead of the whole envelope with its body and headers: the text from the last
-- '"properties":' to just before the closing '}' must be exactly one JSON object. A key of that
-- name inside a string is escaped, and one nested deeper leaves unbalanced braces, so neither
-- passes; then (or when anything is missing) the caller decodes the whole envelope.
local function trailing_properties(raw)
  if string.byte(raw, 1) ~= 123 or string.byte(raw, -1) ~= 125 then return nil end
  -- The last occurrence: looked for in the last 2 KiB first (where kombu's properties are),
  -- in the whole element only when that window has none. The search is for the name without its
  -- opening quote (Lua's plain search stops at every occurrence of the needle's first byte, and
  -- a JSON text is full of quotes: ~6 times faster); a last match not preceded by a quote is
  -- not the key, and the caller decodes the whole envelope.
  local window = math.max(1, #raw - 2048)
  local at = last_find(raw, 'properties":', window)
  if not at and window > 1 then at = last_find(raw, 'properties":', 1) end
  if not at or at < 2 or string.byte(raw, at - 1) ~= 34 then return nil end
  at = at - 1
  local open = string.find(raw, '{', at + 13, true)
  if not open or string.find(string.sub(raw, at + 13, open - 1), '%S') then return nil end
  local ok, props = pcall(cjson.decode, string.sub(raw, open, -2))
  if ok and type(props) == 'table' and type(props['delivery_tag']) == 'string'
      and props['delivery_tag'] ~= '' then
    return props
  end
  return nil
end

local function full()
  return room > 0 and bytes >= room
end

-- Whether `s` is valid UTF-8 (as Rust's str: no overlong forms, surrogates or code points past
-- U+10FFFF). A delivery tag that is not cannot be settled by the worker, which reads it as text.
local function utf8_ok(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else return false end
    for j = i + 1, i + len - 1 do
      local cc = string.byte(s, j)
      if not cc or cc < lo or cc > hi then return false end
      lo, hi = 0x80, 0xBF
    end
    i = i + len
  end
  return true
end

local function handle(qi, raw)
  bytes = bytes + #raw
  local queue = ARGV[4 + qi]
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
    table.insert(items, {qi, dead = reason, letter = {raw, reason, queue, tag,
      headers and str(headers['task']), headers and str(headers['id'])}})
    return
  end
  if not utf8_ok(props['delivery_tag']) then
    reason = 'delivery_tag is not valid UTF-8'
    table.insert(items, {qi, dead = reason, letter = {raw, reason, queue, nil,
      headers and str(headers['task']), headers and str(headers['id'])}})
    return
  end
  local tag = props['delivery_tag']
  local info = props['delivery_info']
  if type(info) ~= 'table' then info = {} end
  local exchange = str(info['exchange']) or ''
  local routing_key = str(info['routing_key']) or queue
  local record = '[' .. raw .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(routing_key) .. ']'
  if not seen[tag] then
    seen[tag] = true
    table.insert(tags, tag)
  end
  -- Whether its tag is free is decided after the pops, for all of this call's tags at once.
  table.insert(items, {qi, raw, tag, exchange, routing_key, record, queue,
    headers and str(headers['task']), headers and str(headers['id'])})
end

-- One queue (the usual case): whole runs per priority step with one RPOP <count> each, which
-- takes the same elements in the same order as popping them one by one. Redis before 6.2 has no
-- count argument; then the general loop below pops one at a time.
local counted = nqueues == 1
if counted then
  for s = 1, nsteps do
    if taken >= max or full() then break end
    local got = redis.pcall('RPOP', KEYS[4 + s], max - taken)
    if type(got) == 'table' and got['err'] then
      counted = false
      break
    end
    if got then
      for i, raw in ipairs(got) do
        if full() then
          -- Past the byte room: the rest of the run goes back, the last popped first, so the
          -- list is as it was. Should a push fail, what is not back yet joins `popped` and the
          -- whole fetch is undone below.
          for j = #got, i, -1 do
            local r = redis.pcall('RPUSH', KEYS[4 + s], got[j])
            if failed(r) then
              pop_err = r['err']
              for k = i, j do table.insert(popped, {KEYS[4 + s], got[k]}) end
              break
            end
          end
          break
        end
        table.insert(popped, {KEYS[4 + s], raw})
        handle(1, raw)
        taken = taken + 1
      end
    end
    if pop_err then break end
  end
end

while not counted and taken < max and not full() do
  local got = false
  for s = 1, nsteps do
    for pos = 1, #order do
      local qi = order[pos]
      local k = 4 + (qi - 1) * nsteps + s
      if not empty[k] then
        local raw = redis.pcall('RPOP', KEYS[k])
        if failed(raw) then
          pop_err = raw['err']
          break
        end
        if raw then
          table.insert(popped, {KEYS[k], raw})
          handle(qi, raw)
          table.remove(order, pos)
          table.insert(order, qi)
          got = true
          break
        end
        empty[k] = true
      end
    end
    if got or pop_err then break end
  end
  if not got then break end
  taken = taken + 1
end

-- One record per tag: another message held under the same tag (earlier in this call or
-- already in `unacked`) would have its record overwritten, and the one whose record is gone could
-- be neither settled nor restored. kombu's tags are unique (a restored message takes its record
-- out before it is pushed back); the same message twice (one publish routed to two queues)
-- shares its record as under kombu. Instead of one HGET a message, each chunk of this call's tags
-- goes into the index with one `ZADD NX`: when it adds them all, none was in the index, so none
-- is in `unacked` (every writer, kombu's included, adds a tag to the index with or before its
-- record and takes it out of the index with or after it), and only then are the records read
-- one by one. The score of a tag found in the index is set to now below, as a plain ZADD did.
local CHUNK = 1000
local err = pop_err
-- Records already in `unacked` under this call's tags (read only for chunks whose ZADD NX
-- added fewer tags than it was given); the tags that ZADD NX scored; the tags no other message
-- holds (their records are this call's, taken back if it fails).
local stored, fresh, ours = {}, {}, {}
local per = 500
for i = 1, #tags, per do
  if err then break end
  local last = math.min(i + per - 1, #tags)
  local args = {}
  for j = i, last do
    args[#args + 1] = now; args[#args + 1] = tags[j]
  end
  local added = redis.pcall('ZADD', KEYS[2], 'NX', unpack(args))
  if failed(added) then err = added['err'] break end
  for j = i, last do
    local tag = tags[j]
    if added == last - i + 1 then
      fresh[tag] = true
      ours[tag] = true
    else
      local cur = redis.pcall('HGET', KEYS[1], tag)
      if type(cur) == 'string' then stored[tag] = cur else ours[tag] = true end
    end
  end
end
-- The items in pop order: the first message under a free tag (or under its own record) takes
-- it; any other is dead-lettered.
local zadd, hset = {}, {}
for _, it in ipairs(items) do
  if err then break end
  if it.dead then
    table.insert(dead, it.letter)
    out[nout + 1], out[nout + 2], out[nout + 3] = '0', tostring(it[1]), it.dead
    out[nout + 4], out[nout + 5], out[nout + 6] = '', '', ''
    nout = nout + 6
  else
    local qi, raw, tag, exchange, routing_key, record = it[1], it[2], it[3], it[4], it[5], it[6]
    local held = records[tag] or stored[tag]
    if held and held ~= record then
      local reason = 'delivery_tag is already held by another message'
      table.insert(dead, {raw, reason, it[7], tag, it[8], it[9]})
      out[nout + 1], out[nout + 2], out[nout + 3] = '0', tostring(qi), reason
      out[nout + 4], out[nout + 5], out[nout + 6] = '', '', ''
      nout = nout + 6
    else
      if records[tag] == nil then
        records[tag] = record
        if not fresh[tag] then
          table.insert(zadd, now); table.insert(zadd, tag)
        end
        hset[#hset + 1] = tag
        hset[#hset + 1] = record
      end
      out[nout + 1], out[nout + 2], out[nout + 3] = '1', tostring(qi), raw
      out[nout + 4], out[nout + 5], out[nout + 6] = tag, exchange, routing_key
      nout = nout + 6
    end
  end
end
for i = 1, #zadd, CHUNK do
  if err then break end
  local r = redis.pcall('ZADD', KEYS[2], unpack(zadd, i, math.min(i + CHUNK - 1, #zadd)))
  if failed(r) then err = r['err'] break end
end
for i = 1, #hset, CHUNK do
  if err then break end
  local r = redis.pcall('HSET', KEYS[1], unpack(hset, i, math.min(i + CHUNK - 1, #hset)))
  if failed(r) then err = r['err'] break end
end
for _, d in ipairs(dead) do
  if err then break end
  local ok, e = pcall(dead_letter, KEYS[3], KEYS[4], d[1], d[2], d[3], d[4], d[5], d[6])
  if not ok then err = tostring(e) end
end
if err then
  -- Undo: no record of this call stays, and every popped element goes back where it was (the
  -- last popped first, so the queue's order is unchanged).
  for tag in pairs(ours) do
    redis.pcall('ZREM', KEYS[2], tag)
    redis.pcall('HDEL', KEYS[1], tag)
  end
  for _, d in ipairs(dead) do
    redis.pcall('LREM', KEYS[3], 1, d[1])
  end
  for i = #popped, 1, -1 do
    redis.pcall('RPUSH', popped[i][1], popped[i][2])
  end
  return redis.error_reply('ERR fetch undone, nothing taken: ' .. err)
end
return out
