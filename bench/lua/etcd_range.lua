-- etcd_range.lua - wrk script: linearizable single-key range reads on keys that exist.
package.path = 'bench/lua/?.lua;' .. package.path
local b64 = require('b64')
local keys = {}
for i = 0, 999 do keys[i] = b64(string.format("rkey-%06d", i)) end
local n = 0
request = function()
  n = (n + 1) % 1000
  local body = '{"key":"' .. keys[n] .. '"}'
  return wrk.format("POST", "/v3/kv/range", { ["Content-Type"] = "application/json" }, body)
end
