-- Shared helpers, prepended to the scripts that need them.

-- Server time as "<seconds>.<microseconds>" (exact decimal text, for ZADD scores).
local function now_text()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

-- LPUSH `raw` unchanged to the dead-letter list and record why in the reasons hash,
-- field = SHA-1 hex of `raw`, value = JSON {reason, queue, delivery_tag, task, id, at}.
local function dead_letter(list_key, reasons_key, raw, reason, queue, tag, task, id)
  redis.call('LPUSH', list_key, raw)
  local function opt(v)
    if type(v) == 'string' and v ~= '' then return v end
    return cjson.null
  end
  local record = cjson.encode({
    reason = reason, queue = queue, delivery_tag = opt(tag), task = opt(task), id = opt(id),
    at = tonumber(now_text()),
  })
  redis.call('HSET', reasons_key, redis.sha1hex(raw), record)
end
