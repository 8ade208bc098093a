-- Cycles through the requests of a file (the script argument): one "HOST PATH" or "PATH" per line, each
-- request the next line's, with that Host header (a line without one keeps the URL's). The requests are
-- formatted once, in init; totals as in summary.lua.
local requests = {}
local count, last = 0, 0

init = function(args)
  for line in io.lines(args[1]) do
    local host, path = line:match("^(%S+)%s+(%S+)$")
    local headers = {}
    for name, value in pairs(wrk.headers) do
      headers[name] = value
    end
    if host then
      headers["Host"] = host
    else
      path = line
    end
    count = count + 1
    requests[count] = wrk.format(nil, path, headers)
  end
  if count == 0 then
    error("no requests in " .. args[1])
  end
end

request = function()
  last = last % count + 1
  return requests[last]
end

-- The `done` that prints the JSON totals is summary.lua's (wrk takes a single script).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "summary.lua")
