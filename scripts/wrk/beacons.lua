-- POST /v1/playback/beacons with a batch of 100 player events (10 sessions), built once.
local now = os.time() * 1000
local events = {}
for i = 1, 100 do
    events[i] = string.format(
        '{"event_id":"01a20000-0000-7000-8000-%012d","event_type":"heartbeat","sid":"bench-session-%d",' ..
        '"cid":"video-%d","viewer_id":"viewer-%d","ts":%d,"position_ms":%d,"br":2800,"bl":9000,"mtp":25000,' ..
        '"ot":"av","player_name":"hls.js","player_version":"1.5.0","device_type":"desktop","os":"Linux","browser":"Chrome"}',
        i, i % 10, i % 7, i % 10, now - 1000, i * 1000)
end
local body = '{"events":[' .. table.concat(events, ",") .. ']}'
request = function()
    return wrk.format("POST", "/v1/playback/beacons", {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. os.getenv("VODSOURCE_BENCH_TOKEN"),
    }, body)
end
