-- POST one Openvolt-shaped event per request, each with a unique delivery_id.
local counter = 0
local thread_id = 0
local event_type = os.getenv("EVENT_TYPE") or "bench.unrouted"
-- SPREAD_PORTS="p1,p2": thread n sends to the nth port on 127.0.0.1, like a load balancer
-- in front of several instances (one wrk, so the load costs the same however many).
local ports = {}
for port in string.gmatch(os.getenv("SPREAD_PORTS") or "", "%d+") do
  table.insert(ports, port)
end
function setup(thread)
  thread:set("id", thread_id)
  if #ports > 0 then
    thread.addr = wrk.lookup("127.0.0.1", ports[(thread_id % #ports) + 1])[1]
  end
  thread_id = thread_id + 1
end
function init(args)
  prefix = tostring(id) .. "-" .. tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9))
end
function request()
  counter = counter + 1
  local body = '{"subscription_id":"0318df2f-7b9c-4b2e-bf8d-113919ab1e78","event_id":"' .. event_type ..
    '","event_timestamp":"2024-05-02T12:31:26.257Z","delivery_id":"' .. prefix .. '-' .. counter ..
    '","payload":[{"meter_id":"6514167223e3d1424bf82742","start_interval":"2024-05-01T00:00:00.000Z",' ..
    '"end_interval":"2024-05-01T23:30:00.000Z"}]}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
