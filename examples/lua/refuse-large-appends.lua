-- Refuses messages over 1 MB appended to Archive (or a folder under it):
-- APPEND, every message of a MULTIAPPEND and every part of a CATENATE.
--
-- A literal is seen by its size only ({ literal = SIZE }): the message
-- itself never enters Lua. A MULTIAPPEND is shown to on_command once per
-- message, with all the arguments so far; refusing any of them makes the
-- server fail the whole command, so nothing of it is stored.

commands = { "APPEND" }

local LIMIT = 1024 * 1024

-- The largest literal anywhere in the arguments (CATENATE nests them in lists).
local function largest(args)
  local size = 0
  for _, arg in ipairs(args) do
    if type(arg) == "table" then
      size = math.max(size, arg.literal or largest(arg))
    end
  end
  return size
end

local function archived(mailbox)
  return mailbox == "Archive" or (mailbox ~= nil and mailbox:find("^Archive[./]") ~= nil)
end

function on_command(cmd, session)
  if archived(cmd.mailbox) and largest(cmd.args) > LIMIT then
    return sluice.reply("NO", "[TOOBIG] Messages over 1 MB do not go to the archive")
  end
end
