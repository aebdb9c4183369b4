-- roam's request hold (lb/hold.py): during a stateful service's handover, requests to its
-- backend wait here, in HAProxy, instead of reaching the old copy (whose writes must stop
-- before its last state is copied) or failing (no server yet holds the final state).
--
--   roam hold <backend> <ms>   new requests to <backend> wait, for at most <ms>
--   roam release <backend>     they go on, to whatever server the backend has now
--
-- The deadline makes a hold safe against an agent that dies mid-handover: the requests go
-- on by themselves. Loaded with `lua-load` (one Lua state shared by all threads), so the
-- table below is the same for the CLI and for every request.
local held = {}

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec // 1000
end

core.register_cli({"roam", "hold"}, "roam hold <backend> <ms> : hold new requests to <backend>",
  function(applet, _, _, backend, ms)
    local n = tonumber(ms)
    if backend == nil or n == nil or n < 1 or n > 60000 then
      applet:send("usage: roam hold <backend> <1-60000 ms>\n")
      return
    end
    held[backend] = now_ms() + n
    applet:send("held " .. backend .. "\n")
  end)

core.register_cli({"roam", "release"}, "roam release <backend> : let held requests go on",
  function(applet, _, _, backend)
    if backend == nil then
      applet:send("usage: roam release <backend>\n")
      return
    end
    held[backend] = nil
    applet:send("released " .. backend .. "\n")
  end)

core.register_action("roam_hold", {"http-req"}, function(txn)
  local backend = txn.f:be_name()
  while true do
    local deadline = held[backend]
    if deadline == nil then return end
    if now_ms() >= deadline then
      held[backend] = nil
      return
    end
    core.msleep(1)
  end
end)
