-- A message from elsewhere (another broker) pushed to the dead-letter list with its record.
-- KEYS[1] dead-letter list, KEYS[2] its reasons hash; ARGV: payload, reason, queue, tag, task, id.
dead_letter(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1
