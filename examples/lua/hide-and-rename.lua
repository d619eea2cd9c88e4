-- Hides folders by pattern and shows one folder under another name, in
-- both directions: the server's "Sent Messages" is the client's "Sent".
--
-- Responses: LIST, LSUB and STATUS name mailboxes; a hidden one is dropped,
-- a renamed one is shown under its client name. Commands: a hidden name
-- does not exist, a renamed one is sent to the server under its real name.
-- (sluice.forward replaces the first mailbox argument: RENAME's target and
-- COPY's destination are the first mailbox argument of those commands only
-- when they are the only one, so the example refuses RENAME of either.)

commands = { "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
             "STATUS", "APPEND", "COPY", "MOVE", "GETMETADATA", "SETMETADATA" }
responses = { "LIST", "LSUB", "STATUS" }

-- Lua patterns on the whole name (as the client sees it).
local HIDDEN = { "^Private$", "^Private[./]", "^Calendar$" }
local SHOWN_AS = { ["Sent Messages"] = "Sent" }
local REAL_NAME = {}
for server, client in pairs(SHOWN_AS) do REAL_NAME[client] = server end

local function hidden(name)
  for _, pattern in ipairs(HIDDEN) do
    if name:find(pattern) then return true end
  end
  return false
end

function on_command(cmd, session)
  local name = cmd.mailbox
  if name == nil then return end
  if hidden(name) or SHOWN_AS[name] then
    return sluice.reply("NO", "[NONEXISTENT] Mailbox does not exist")
  end
  if REAL_NAME[name] then
    if cmd.name == "RENAME" or cmd.name == "DELETE" then
      return sluice.reply("NO", "[CANNOT] This mailbox cannot be renamed or deleted")
    end
    return sluice.forward{ mailbox = REAL_NAME[name] }
  end
end

function on_response(resp, session)
  local name = resp.mailbox
  if name == nil then return end
  if hidden(name) or REAL_NAME[name] then return sluice.drop() end
  if SHOWN_AS[name] then return sluice.forward{ mailbox = SHOWN_AS[name] } end
end
