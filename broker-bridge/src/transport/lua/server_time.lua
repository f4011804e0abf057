-- The server clock as "<seconds>.<microseconds>".
return now_text()
