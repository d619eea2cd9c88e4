-- Writes a line to the proxy's log for every deletion: a mailbox deleted,
-- messages flagged \Deleted, and expunges (with the mailbox selected).
-- Passes every command on unchanged.

commands = { "DELETE", "STORE", "EXPUNGE" }

local function flags_deleted(args)
  -- STORE seq (+)FLAGS(.SILENT) (flags…): the flags are the last argument.
  local flags = args[#args]
  if type(flags) == "string" then flags = { flags } end
  for _, flag in ipairs(flags) do
    if type(flag) == "string" and flag:upper() == "\\DELETED" then return true end
  end
  return false
end

function on_command(cmd, session)
  local who = session.user .. " from " .. (session.client_ip or "?")
  if cmd.name == "DELETE" then
    sluice.log("notice", who .. " deletes mailbox " .. cmd.mailbox)
  elseif cmd.name == "STORE" and not tostring(cmd.args[2]):find("^%-") and flags_deleted(cmd.args) then
    sluice.log("notice", who .. " flags " .. cmd.args[1] .. (cmd.uid and " (UID)" or "") ..
      " \\Deleted in " .. tostring(session.selected))
  elseif cmd.name == "EXPUNGE" then
    sluice.log("notice", who .. " expunges " .. tostring(session.selected))
  end
end
