-- wrk -t2 -c64 -d30s -s bench/wrk/health.lua http://127.0.0.1:8080/health
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
