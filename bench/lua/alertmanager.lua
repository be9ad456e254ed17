-- POST one unique alert per request to Alertmanager's v2 API.
local counter = 0
local thread_id = 0
function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
end
function init(args)
  prefix = tostring(id) .. "-" .. tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9))
end
function request()
  counter = counter + 1
  local body = '[{"labels":{"alertname":"MeterData","meter":"' .. prefix .. '-' .. counter ..
    '","severity":"info"},"annotations":{"summary":"new data"}}]'
  return wrk.format("POST", "/api/v2/alerts", {["Content-Type"] = "application/json"}, body)
end
