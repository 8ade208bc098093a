-- DEPTH requests (the script argument, default 16) written at once on each connection; totals as in
-- summary.lua.
local batch

init = function(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format(nil, wrk.path)
  end
  batch = table.concat(requests)
end

request = function()
  return batch
end

-- The `done` that prints the JSON totals is summary.lua's (wrk takes a single script).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "summary.lua")
