-- Stream ids as {ms, seq} pairs (exact below 2^53, as every id the log gets is).
-- id(s): the pair of id `s` ("1700000000000-3").
-- below(a, b): true when pair `a` comes before pair `b`.
local function id(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function below(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
