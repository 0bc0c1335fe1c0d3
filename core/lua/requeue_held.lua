-- requeue_held: queues a task that was running when Redis lost its data once more, in the
-- delayed set (due after a lease: by then a worker still running it holds its held key).
-- Once per dedup key. No event: the task's activity stays RUNNING.
-- KEYS[1] dedup key
-- KEYS[2] delayed set of the task's queue
-- ARGV[1] dedup window (s)
-- ARGV[2] due (ms)
-- ARGV[3] delayed-set member ("h:" or "l:" + event JSON)
-- Returns 1 when queued, 0 when the dedup key was taken.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
