#ifndef SLUICE_LUA_H
#define SLUICE_LUA_H

// The sandbox around one lua_State: a capped allocator, an instruction-count
// hook, the libraries a script may use, and calls that never let a Lua error
// unwind through Swift (every call into script code is protected).
//
// Written in C because Lua reports errors with longjmp: the hook and the
// allocator raise them, and they must only ever cross C frames.

#include <stddef.h>
#include <lua.h>

typedef struct sluice_lua sluice_lua;

/// Why the last protected call failed, beyond Lua's own status.
enum sluice_lua_limit {
    SLUICE_LUA_WITHIN_LIMITS = 0,
    SLUICE_LUA_INSTRUCTION_LIMIT = 1,
    SLUICE_LUA_MEMORY_LIMIT = 2,
    /// The call ran past its time backstop (250 ms): work no count saw.
    SLUICE_LUA_TIME_LIMIT = 3,
};

/// A new sandboxed state: only base (without dofile, loadfile, require,
/// collectgarbage, print, warn; load reads text only; setmetatable refuses
/// finalizers), string (without dump), table, math, utf8 and the `sluice`
/// table, whose `log` calls `log` (level, message: both strings; it returns
/// 0, or 1 for an unknown level). Reading a global that does not exist is an
/// error, at load time and after. `memory_limit` caps what scripts allocate;
/// `owner` comes back from sluice_lua_owner (the Swift object).
/// NULL when the state cannot be created.
sluice_lua *sluice_lua_new(size_t memory_limit, void *owner, lua_CFunction log);
void sluice_lua_close(sluice_lua *sandbox);

lua_State *sluice_lua_state(sluice_lua *sandbox);
void *sluice_lua_owner(lua_State *L);

/// Compiles `source` (text only, never bytecode) as chunk `chunkname`
/// ("@file.lua" names errors file.lua:LINE) and runs it, within the limits. LUA_OK, or an error status with the message on the stack.
int sluice_lua_run(sluice_lua *sandbox, const char *source, size_t length, const char *chunkname,
                   long instructions);

/// Calls the function below `nargs` arguments on the stack, within
/// `instructions` VM instructions and the memory limit. LUA_OK with one
/// result, or an error status with the message on the stack.
int sluice_lua_call(sluice_lua *sandbox, int nargs, long instructions);

/// Which limit (if any) the last run or call hit.
enum sluice_lua_limit sluice_lua_last_limit(sluice_lua *sandbox);


/// Pushes the globals table.
void sluice_lua_push_globals(sluice_lua *sandbox);
/// Pops the top value into the registry; its reference.
int sluice_lua_ref(sluice_lua *sandbox);
/// Pushes the value of a reference.
void sluice_lua_push_ref(sluice_lua *sandbox, int ref);
/// Frees a reference.
void sluice_lua_unref(sluice_lua *sandbox, int ref);

#endif
