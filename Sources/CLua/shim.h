// Lua 5.4 from the system (Debian: liblua5.4-dev), found with pkg-config lua5.4.
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
