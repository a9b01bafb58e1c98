-- POST /v1/videos with a fresh body shape each time (titles differ; ids come from the server).
local counter = 0
request = function()
    counter = counter + 1
    local body = string.format(
        '{"title":"bench %d","tags":["bench"],"filename":"clip.mp4","content_type":"video/mp4","size_bytes":1048576}',
        counter)
    return wrk.format("POST", "/v1/videos", {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. os.getenv("VODSOURCE_BENCH_TOKEN"),
    }, body)
end
