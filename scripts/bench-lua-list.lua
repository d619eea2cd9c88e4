-- The Lua side of `scripts/bench-compare --lua`: hides 100 of carol's 1,000
-- folders and shows one under another name, reading LIST responses only
-- (the same as the built-in rules of scripts/bench-compare's "rules" column).
responses = { "LIST" }

function on_response(resp, session)
  local name = resp.mailbox
  if name == nil then return end
  if name:find("^Folder01") then return sluice.drop() end
  if name == "Folder0001" then return sluice.forward{ mailbox = "First folder" } end
end
