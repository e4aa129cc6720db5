-- etcd_put.lua - wrk script: unique-key PUTs to etcd's JSON gateway (/v3/kv/put).
-- Keys are ~16 bytes ("key-<thread>-<n>"), values 100 bytes; both base64 as the gateway wants.
package.path = 'bench/lua/?.lua;' .. package.path
local b64 = require('b64')

local counter = 0
local tid = 0
local value = b64(string.rep('v', 100))
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
end

request = function()
  counter = counter + 1
  local key = b64(string.format("key-%d-%09d", tid, counter))
  local body = '{"key":"' .. key .. '","value":"' .. value .. '"}'
  return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" }, body)
end
