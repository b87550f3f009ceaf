-- wrk -t2 -c64 -d30s -s bench/wrk/post_task.lua http://127.0.0.1:8080/v1/tasks
wrk.method = "POST"
wrk.body = '{"type":"echo","payload":{"hello":"world"}}'
wrk.headers["Content-Type"] = "application/json"
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
