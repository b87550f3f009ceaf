-- wrk -t2 -c64 -d30s -s bench/wrk/request_response.lua "http://127.0.0.1:8080/v1/tasks?wait=2s"
wrk.method = "POST"
wrk.body = '{"type":"echo","payload":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
