-- Delete lock KEYS[1] only when it still holds our token ARGV[1] (compare-and-delete).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
