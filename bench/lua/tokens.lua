-- tokens.lua - wrk script: GET with a bearer token taken in turn from the file named by
-- BENCH_TOKENS_FILE (one token a line; bench/proxy_features.sh writes 4,096 distinct tokens,
-- more than keel proxy's cache of 256 verified tokens, so each request pays a verification).
local tokens = {}
local file = assert(io.open(os.getenv("BENCH_TOKENS_FILE"), "r"))
for line in file:lines() do
  if #line > 0 then tokens[#tokens + 1] = line end
end
file:close()
assert(#tokens > 0, "no tokens")
local n = 0

request = function()
  n = n % #tokens + 1
  return wrk.format("GET", "/hello", { ["Authorization"] = "Bearer " .. tokens[n] })
end
