#ifndef SLUICE_SANDBOX_INTERNAL_H
#define SLUICE_SANDBOX_INTERNAL_H

// Shared between sandbox.c and patterns.c; not part of the Swift interface.

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/// Takes `units` from the current call's instruction budget; raises
/// "instruction limit reached" when it is spent (C functions pay for the
/// work they do, which the count hook cannot see).
void sluice_lua_charge(lua_State *L, long units);

/// Replaces string.find, match, gmatch and gsub with versions that charge
/// every matching step.
void sluice_lua_open_patterns(lua_State *L);

#endif
