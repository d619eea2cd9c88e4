#include "sluice_lua.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>

/// The hook runs every this many VM instructions.
#define SLUICE_HOOK_STEP 1000

struct sluice_lua {
    lua_State *L;
    /// Bytes allocated, and the cap while script code runs.
    size_t used;
    size_t limit;
    /// The cap applies only inside sluice_lua_run/sluice_lua_call: the
    /// values the proxy pushes for a call (bounded by the line limits) must
    /// never raise an error outside protected mode.
    int enforcing;
    /// Instructions left for the current call.
    long budget;
    enum sluice_lua_limit limit_hit;
    void *owner;
};

static sluice_lua *sandbox_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sluice_lua *sandbox = ud;
    if (ptr == NULL) osize = 0;  // then osize tells the kind of object
    if (nsize == 0) {
        free(ptr);
        sandbox->used -= osize;
        return NULL;
    }
    if (nsize > osize && sandbox->enforcing && sandbox->used - osize + nsize > sandbox->limit) {
        sandbox->limit_hit = SLUICE_LUA_MEMORY_LIMIT;
        return NULL;  // Lua raises a memory error (after an emergency collection)
    }
    void *grown = realloc(ptr, nsize);
    if (grown == NULL) return NULL;
    sandbox->used = sandbox->used - osize + nsize;
    return grown;
}

static void sandbox_hook(lua_State *L, lua_Debug *ar) {
    sluice_lua *sandbox = sandbox_of(L);
    sandbox->budget -= SLUICE_HOOK_STEP;
    if (sandbox->budget <= 0) {
        sandbox->limit_hit = SLUICE_LUA_INSTRUCTION_LIMIT;
        // Where the script was (luaL_error's level 1 is no Lua function inside a hook).
        if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) {
            luaL_error(L, "%s:%d: instruction limit reached", ar->short_src, ar->currentline);
        }
        luaL_error(L, "instruction limit reached");
    }
}

/// Once a limit is hit, the call is over: a script's own pcall must not
/// catch the error and go on (it would loop for ever, 1,000 instructions at
/// a time).
static int raise_if_limit_hit(lua_State *L) {
    switch (sandbox_of(L)->limit_hit) {
    case SLUICE_LUA_INSTRUCTION_LIMIT: return luaL_error(L, "instruction limit reached");
    case SLUICE_LUA_MEMORY_LIMIT: return luaL_error(L, "memory limit reached");
    default: return 0;
    }
}

/// pcall and xpcall: the library's, then the limit check. Upvalue 1 is the original.
static int guarded_pcall(lua_State *L) {
    int arguments = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, arguments, LUA_MULTRET);
    raise_if_limit_hit(L);
    return lua_gettop(L);
}

/// setmetatable without __gc: a finalizer would run during a collection,
/// which can happen outside any protected call.
static int guarded_setmetatable(lua_State *L) {
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        int kind = lua_rawget(L, 2);
        lua_pop(L, 1);
        if (kind != LUA_TNIL) return luaL_error(L, "finalizers (__gc) are not available to scripts");
    }
    int arguments = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, arguments, LUA_MULTRET);
    return lua_gettop(L);
}

/// load reads text only: bytecode can crash the interpreter.
static int guarded_load(lua_State *L) {
    if (lua_gettop(L) < 3) lua_settop(L, 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    int arguments = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, arguments, LUA_MULTRET);
    return lua_gettop(L);
}

static void wrap_global(lua_State *L, const char *name, lua_CFunction wrapper) {
    lua_getglobal(L, name);
    lua_pushcclosure(L, wrapper, 1);
    lua_setglobal(L, name);
}

/// The `sluice` table's constructors (their values are checked again by the
/// proxy), sluice.log over the proxy's function, and strict globals.
static const char prelude[] =
    "local log = ...\n"
    "local type, error, select = type, error, select\n"
    "local function text(value, what, level)\n"
    "  if type(value) ~= 'string' then error(what .. ' must be a string', level + 1) end\n"
    "end\n"
    "sluice = {}\n"
    "function sluice.reply(status, message)\n"
    "  text(status, 'sluice.reply: the status', 2); text(message, 'sluice.reply: the text', 2)\n"
    "  return { sluice = 'reply', status = status, text = message }\n"
    "end\n"
    "function sluice.answer(lines, status, message)\n"
    "  if type(lines) ~= 'table' then error('sluice.answer: the untagged lines must be a table of strings', 2) end\n"
    "  for i = 1, #lines do text(lines[i], 'sluice.answer: each untagged line', 2) end\n"
    "  text(status, 'sluice.answer: the status', 2); text(message, 'sluice.answer: the text', 2)\n"
    "  return { sluice = 'answer', lines = lines, status = status, text = message }\n"
    "end\n"
    "function sluice.forward(changes)\n"
    "  if changes ~= nil and type(changes) ~= 'table' then error('sluice.forward: expected a table such as { mailbox = \"Archive\" }', 2) end\n"
    "  local mailbox = changes and changes.mailbox\n"
    "  if mailbox ~= nil then text(mailbox, 'sluice.forward: mailbox', 2) end\n"
    "  return { sluice = 'forward', mailbox = mailbox }\n"
    "end\n"
    "function sluice.drop() return { sluice = 'drop' } end\n"
    "function sluice.log(level, message)\n"
    "  text(level, 'sluice.log: the level', 2); text(message, 'sluice.log: the message', 2)\n"
    "  if log(level, message) ~= 0 then\n"
    "    error('sluice.log: the level is one of debug, info, notice, warning, error', 2)\n"
    "  end\n"
    "end\n"
    "setmetatable(_G, { __index = function(_, name)\n"
    "  error(\"global '\" .. tostring(name) .. \"' is not defined\", 2)\n"
    "end })\n";

static int open_sandbox(lua_State *L) {
    lua_CFunction log = (lua_CFunction)lua_touserdata(L, 1);
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_settop(L, 0);
    static const char *const removed[] = {
        "dofile", "loadfile", "require", "collectgarbage", "print", "warn", NULL,
    };
    for (const char *const *name = removed; *name != NULL; name++) {
        lua_pushnil(L);
        lua_setglobal(L, *name);
    }
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    wrap_global(L, "pcall", guarded_pcall);
    wrap_global(L, "xpcall", guarded_pcall);
    wrap_global(L, "setmetatable", guarded_setmetatable);
    wrap_global(L, "load", guarded_load);
    if (luaL_loadbufferx(L, prelude, sizeof(prelude) - 1, "=sluice", "t") != LUA_OK) return lua_error(L);
    lua_pushcfunction(L, log);
    lua_call(L, 1, 0);
    return 0;
}

sluice_lua *sluice_lua_new(size_t memory_limit, void *owner, lua_CFunction log) {
    sluice_lua *sandbox = calloc(1, sizeof *sandbox);
    if (sandbox == NULL) return NULL;
    sandbox->limit = memory_limit;
    sandbox->owner = owner;
    sandbox->L = lua_newstate(sandbox_alloc, sandbox);
    if (sandbox->L == NULL) {
        free(sandbox);
        return NULL;
    }
    lua_State *L = sandbox->L;
    lua_pushcfunction(L, open_sandbox);
    lua_pushlightuserdata(L, (void *)log);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        sluice_lua_close(sandbox);
        return NULL;
    }
    return sandbox;
}

void sluice_lua_close(sluice_lua *sandbox) {
    if (sandbox == NULL) return;
    lua_close(sandbox->L);
    free(sandbox);
}

lua_State *sluice_lua_state(sluice_lua *sandbox) { return sandbox->L; }

void *sluice_lua_owner(lua_State *L) { return sandbox_of(L)->owner; }

enum sluice_lua_limit sluice_lua_last_limit(sluice_lua *sandbox) { return sandbox->limit_hit; }

size_t sluice_lua_memory(sluice_lua *sandbox) { return sandbox->used; }

/// Runs the function below `nargs` arguments in protected mode with the
/// hook set and the memory cap enforced; one result.
static int protected_call(sluice_lua *sandbox, int nargs, long instructions) {
    lua_State *L = sandbox->L;
    sandbox->budget = instructions;
    sandbox->limit_hit = SLUICE_LUA_WITHIN_LIMITS;
    sandbox->enforcing = 1;
    lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, SLUICE_HOOK_STEP);
    int status = lua_pcall(L, nargs, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    sandbox->enforcing = 0;
    return status;
}

int sluice_lua_run(sluice_lua *sandbox, const char *source, size_t length, const char *chunkname,
                   long instructions) {
    lua_State *L = sandbox->L;
    sandbox->limit_hit = SLUICE_LUA_WITHIN_LIMITS;
    sandbox->enforcing = 1;
    int status = luaL_loadbufferx(L, source, length, chunkname, "t");
    sandbox->enforcing = 0;
    if (status != LUA_OK) return status;
    return protected_call(sandbox, 0, instructions);
}

int sluice_lua_call(sluice_lua *sandbox, int nargs, long instructions) {
    return protected_call(sandbox, nargs, instructions);
}

void sluice_lua_push_globals(sluice_lua *sandbox) {
    lua_rawgeti(sandbox->L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
}

int sluice_lua_ref(sluice_lua *sandbox) { return luaL_ref(sandbox->L, LUA_REGISTRYINDEX); }

void sluice_lua_push_ref(sluice_lua *sandbox, int ref) { lua_rawgeti(sandbox->L, LUA_REGISTRYINDEX, ref); }

void sluice_lua_unref(sluice_lua *sandbox, int ref) { luaL_unref(sandbox->L, LUA_REGISTRYINDEX, ref); }
