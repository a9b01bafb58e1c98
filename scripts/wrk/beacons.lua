-- POST /v1/playback/beacons with a batch of 100 player events (10 sessions), built once,
-- about the videos in VODSOURCE_BENCH_VIDEOS (comma-separated ids of videos that exist:
-- beacons name a video the caller may play).
local now = os.time() * 1000
local videos = {}
for id in string.gmatch(os.getenv("VODSOURCE_BENCH_VIDEOS") or "", "[^,]+") do
    videos[#videos + 1] = id
end
assert(#videos > 0, "set VODSOURCE_BENCH_VIDEOS to the ids of existing videos")
local events = {}
for i = 1, 100 do
    events[i] = string.format(
        '{"event_id":"01a20000-0000-7000-8000-%012d","event_type":"heartbeat","sid":"bench-session-%d",' ..
        '"cid":"%s","viewer_id":"viewer-%d","ts":%d,"position_ms":%d,"br":2800,"bl":9000,"mtp":25000,' ..
        '"ot":"av","player_name":"hls.js","player_version":"1.5.0","device_type":"desktop","os":"Linux","browser":"Chrome"}',
        i, i % 10, videos[i % #videos + 1], i % 10, now - 1000, i * 1000)
end
local body = '{"events":[' .. table.concat(events, ",") .. ']}'
request = function()
    return wrk.format("POST", "/v1/playback/beacons", {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. os.getenv("VODSOURCE_BENCH_TOKEN"),
    }, body)
end
