-- Of the messages held unacked (KEYS[1], kombu's `unacked` hash of [message, exchange,
-- routing_key] JSON arrays), count those whose routing key is one of ARGV (the queues a
-- worker consumes): {held, eta_held}. eta_held are those whose `eta` header is still in the
-- future by the server clock (reserved until due, not backlog); held are the others (running
-- or about to run). Read with string patterns, not decoded: the value's last element is the
-- routing key, and the header is `"eta": "<ISO 8601>"` in the unescaped message object.

-- Seconds since the epoch of an ISO 8601 time (`YYYY-MM-DDTHH:MM:SS[.ffffff][Z|±HH:MM]`,
-- naive read as UTC), or nil.
local function epoch(text)
  local y, mo, d, h, mi, s, rest =
    string.match(text, '^(%d+)-(%d+)-(%d+)[T ](%d+):(%d+):(%d+%.?%d*)(.*)$')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- Days from the civil date (proleptic Gregorian).
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local t = (era * 146097 + doe - 719468) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  local sign, oh, om = string.match(rest, '^([+-])(%d%d):?(%d%d)')
  if sign then
    local offset = tonumber(oh) * 3600 + tonumber(om) * 60
    if sign == '+' then t = t - offset else t = t + offset end
  end
  return t
end

local wanted = {}
for i = 1, #ARGV do wanted[ARGV[i]] = true end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local held, eta_held = 0, 0
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000)
  cursor = page[1]
  local fields = page[2]
  for i = 2, #fields, 2 do
    local value = fields[i]
    local rk = string.match(value, '"([^"\\]*)"%s*%]%s*$')
    if rk and wanted[rk] then
      local eta = string.match(value, '"eta":%s*"([^"]+)"')
      local due = eta and epoch(eta)
      if due and due > now then
        eta_held = eta_held + 1
      else
        held = held + 1
      end
    end
  end
until cursor == '0'
return {held, eta_held}
