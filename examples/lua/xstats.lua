-- Counts each session's commands and answers a command of its own,
-- XSTATS, that no server knows:
--
--   C: s1 XSTATS
--   S: * XSTATS (FETCH 12 NOOP 3 SELECT 1 XSTATS 1)
--   S: s1 OK Counted by the proxy
--
-- session.data is the session's own table: it lives as long as the IMAP
-- session, and no other session sees it.

commands = { "SELECT", "EXAMINE", "FETCH", "STORE", "SEARCH", "NOOP", "STATUS", "LIST", "APPEND", "XSTATS" }

function on_command(cmd, session)
  local counts = session.data.counts
  if counts == nil then
    counts = {}
    session.data.counts = counts
  end
  counts[cmd.name] = (counts[cmd.name] or 0) + 1
  if cmd.name == "XSTATS" then
    local names = {}
    for name in pairs(counts) do names[#names + 1] = name end
    table.sort(names)
    local parts = {}
    for _, name in ipairs(names) do parts[#parts + 1] = name .. " " .. counts[name] end
    return sluice.answer({ "XSTATS (" .. table.concat(parts, " ") .. ")" }, "OK", "Counted by the proxy")
  end
end
