-- appended(stream, since, event): for scripts that a worker may run again after losing the
-- reply. The id of the entry of `stream` from `since` (ms) on that holds `event`: the append
-- of the earlier run, when it happened. Scans only on such a retry (`since` given), so a
-- normal run pays nothing.
-- Key parameters: stream.
local function appended(stream, since, event)
  if not since then
    return nil
  end
  for _, entry in ipairs(redis.call('XRANGE', stream, since, '+', 'COUNT', 100000)) do
    if entry[2][2] == event then
      return entry[1]
    end
  end
end
