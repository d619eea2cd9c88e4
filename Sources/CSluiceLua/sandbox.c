#include "sluice_lua.h"
#include "sandbox_internal.h"

#include <stdlib.h>
#include <time.h>

/// The hook runs every this many VM instructions.
#define SLUICE_HOOK_STEP 1000
/// Largest string a script may make. An instruction that copies or compares
/// strings (`..`, `==`) costs their length, which the count does not see:
/// bounding strings bounds what 1,000 instructions between two hooks cost.
#define SLUICE_MAX_STRING (256 * 1024)
/// A call still running after this long is stopped, whatever its count (a
/// backstop: with strings bounded and C functions charged, the count limit
/// is reached first; the clock catches what no count sees).
#define SLUICE_CALL_TIME_LIMIT_NS (250LL * 1000 * 1000)
/// C functions pay one instruction per this many bytes they touch.
#define SLUICE_BYTES_PER_UNIT 16

struct sluice_lua {
    lua_State *L;
    /// Bytes allocated, and the cap while script code runs.
    size_t used;
    size_t limit;
    /// The cap applies only inside sluice_lua_run/sluice_lua_call: the
    /// values the proxy pushes for a call (bounded by the line limits) must
    /// never raise an error outside protected mode.
    int enforcing;
    /// Instructions left for the current call, and when it must end.
    long budget;
    long long deadline_ns;
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
    // A new block's osize is the type of object it is for (manual, lua_Alloc).
    int new_string = ptr == NULL && (osize & 0x0F) == LUA_TSTRING;
    if (ptr == NULL) osize = 0;
    if (nsize == 0) {
        free(ptr);
        sandbox->used -= osize;
        return NULL;
    }
    if (nsize > osize && sandbox->enforcing) {
        if (sandbox->used - osize + nsize > sandbox->limit || (new_string && nsize > SLUICE_MAX_STRING)) {
            sandbox->limit_hit = SLUICE_LUA_MEMORY_LIMIT;
            return NULL;  // Lua raises a memory error (after an emergency collection)
        }
    }
    void *grown = realloc(ptr, nsize);
    if (grown == NULL) return NULL;
    sandbox->used = sandbox->used - osize + nsize;
    return grown;
}

static long long now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static void sandbox_hook(lua_State *L, lua_Debug *ar) {
    sluice_lua *sandbox = sandbox_of(L);
    sandbox->budget -= SLUICE_HOOK_STEP;
    if (sandbox->budget > 0 && now_ns() > sandbox->deadline_ns) {
        sandbox->budget = 0;
        sandbox->limit_hit = SLUICE_LUA_TIME_LIMIT;
    }
    if (sandbox->budget <= 0) {
        if (sandbox->limit_hit == SLUICE_LUA_WITHIN_LIMITS) sandbox->limit_hit = SLUICE_LUA_INSTRUCTION_LIMIT;
        // From now on every instruction raises: a to-be-closed variable's
        // __close (run while the error unwinds, with the hook on) stops at its
        // first instruction instead of getting 1,000 more (red team 2 #3).
        lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, 1);
        // Where the script was (luaL_error's level 1 is no Lua function inside a hook).
        if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) {
            luaL_error(L, "%s:%d: instruction limit reached", ar->short_src, ar->currentline);
        }
        luaL_error(L, "instruction limit reached");
    }
}

/// Calls the function in upvalue 1 with this call's arguments (the library
/// function a wrapper stands in for); its results are left on the stack.
static void call_original(lua_State *L) {
    int arguments = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, arguments, LUA_MULTRET);
}

/// Once a limit is hit, the call is over: a script's own pcall must not
/// catch the error and go on (it would loop for ever, 1,000 instructions at
/// a time).
static int raise_if_limit_hit(lua_State *L) {
    switch (sandbox_of(L)->limit_hit) {
    case SLUICE_LUA_INSTRUCTION_LIMIT:
    case SLUICE_LUA_TIME_LIMIT: return luaL_error(L, "instruction limit reached");
    case SLUICE_LUA_MEMORY_LIMIT: return luaL_error(L, "memory limit reached");
    default: return 0;
    }
}

void sluice_lua_charge(lua_State *L, long units) {
    sluice_lua *sandbox = sandbox_of(L);
    if (!sandbox->enforcing) return;
    sandbox->budget -= units;
    if (sandbox->budget > 0 && now_ns() > sandbox->deadline_ns) {
        sandbox->budget = 0;
        sandbox->limit_hit = SLUICE_LUA_TIME_LIMIT;
    }
    if (sandbox->budget <= 0) {
        if (sandbox->limit_hit == SLUICE_LUA_WITHIN_LIMITS) sandbox->limit_hit = SLUICE_LUA_INSTRUCTION_LIMIT;
        luaL_error(L, "instruction limit reached");
    }
}

/// A C function of the libraries, charged for the work it does: upvalue 1
/// is the function, upvalue 2 how its cost is estimated from its arguments
/// (before it runs, so that a call too expensive never starts).
enum cost {
    COST_BYTES_OF_ARGUMENTS,  // every string argument's length (upper, lower, sub, byte, format …)
    COST_REPEAT,              // string.rep: the result's length
    COST_ARGUMENT_COUNT,      // string.char, utf8.char, table.pack
    COST_TABLE_LENGTH,        // table.concat, insert, remove: the table's length
    COST_TABLE_SORT,          // table.sort: n log n
    COST_TABLE_RANGE,         // table.unpack (i, j), table.move (f, e)
};

/// The length the table functions will use: `#t`, through `__len` as they
/// do (a raw length of 0 under a `__len` of 3e9 made table.insert loop for
/// ever, red team 2 #2). `__len` runs here under the hook like any script code.
static long table_length(lua_State *L, int index) {
    if (lua_type(L, index) != LUA_TTABLE) return 0;
    lua_Integer length = luaL_len(L, index);
    if (length < 0) return 0;
    return length > 0x7fffffffL ? 0x7fffffffL : (long)length;
}

static long range_cost(lua_State *L, int first, int last, long default_last) {
    lua_Integer from = lua_type(L, first) == LUA_TNUMBER ? lua_tointeger(L, first) : 1;
    lua_Integer to = lua_type(L, last) == LUA_TNUMBER ? lua_tointeger(L, last) : default_last;
    if (to < from) return 0;
    lua_Unsigned count = (lua_Unsigned)to - (lua_Unsigned)from;
    return count >= (lua_Unsigned)0x7fffffff ? 0x7fffffffL : (long)count + 1;
}

static long estimate(lua_State *L, enum cost cost) {
    int arguments = lua_gettop(L);
    long bytes = 0;
    switch (cost) {
    case COST_BYTES_OF_ARGUMENTS:
        for (int i = 1; i <= arguments; i++) {
            if (lua_type(L, i) == LUA_TSTRING) bytes += (long)lua_rawlen(L, i);
        }
        return bytes / SLUICE_BYTES_PER_UNIT + 1;
    case COST_REPEAT: {
        lua_Integer times = lua_type(L, 2) == LUA_TNUMBER ? lua_tointeger(L, 2) : 0;
        long unit = (lua_type(L, 1) == LUA_TSTRING ? (long)lua_rawlen(L, 1) : 0)
                  + (lua_type(L, 3) == LUA_TSTRING ? (long)lua_rawlen(L, 3) : 0);
        if (times <= 0) return 1;
        // Lua loops `times` times even over an empty string (red team 2 #1).
        if (times > SLUICE_MAX_STRING || unit > SLUICE_MAX_STRING) return 0x7fffffffL;  // over the string cap anyway
        return (long)(times * unit + times) / SLUICE_BYTES_PER_UNIT + 1;
    }
    case COST_ARGUMENT_COUNT:
        return arguments + 1;
    case COST_TABLE_LENGTH:
        return table_length(L, 1) + 1;
    case COST_TABLE_SORT: {
        long n = table_length(L, 1), log = 1;
        while ((1L << log) < n && log < 62) log++;
        return n * log + 1;
    }
    case COST_TABLE_RANGE:
        // unpack(t, i, j) and move(a1, f, e, t): the elements in the range.
        return range_cost(L, 2, 3, table_length(L, 1)) + 1;
    }
    return 1;
}

static int charged_call(lua_State *L) {
    sluice_lua_charge(L, estimate(L, (enum cost)lua_tointeger(L, lua_upvalueindex(2))));
    call_original(L);
    return lua_gettop(L);
}

static void charge_library(lua_State *L, const char *library, const char *const names[], enum cost cost) {
    lua_getglobal(L, library);
    for (const char *const *name = names; *name != NULL; name++) {
        lua_getfield(L, -1, *name);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushinteger(L, cost);
        lua_pushcclosure(L, charged_call, 2);
        lua_setfield(L, -2, *name);
    }
    lua_pop(L, 1);
}

static void charge_libraries(lua_State *L) {
    static const char *const string_bytes[] = {
        "byte", "format", "lower", "pack", "packsize", "reverse", "sub", "unpack", "upper", NULL,
    };
    static const char *const string_repeat[] = {"rep", NULL};
    static const char *const string_count[] = {"char", NULL};
    static const char *const utf8_bytes[] = {"codepoint", "len", "offset", "codes", NULL};
    static const char *const utf8_count[] = {"char", NULL};
    static const char *const table_length_cost[] = {"concat", "insert", "remove", NULL};
    static const char *const table_sort[] = {"sort", NULL};
    static const char *const table_range[] = {"unpack", "move", NULL};
    static const char *const table_count[] = {"pack", NULL};
    static const char *const base_bytes[] = {"tonumber", "tostring", "load", NULL};
    charge_library(L, LUA_STRLIBNAME, string_bytes, COST_BYTES_OF_ARGUMENTS);
    charge_library(L, LUA_STRLIBNAME, string_repeat, COST_REPEAT);
    charge_library(L, LUA_STRLIBNAME, string_count, COST_ARGUMENT_COUNT);
    charge_library(L, LUA_UTF8LIBNAME, utf8_bytes, COST_BYTES_OF_ARGUMENTS);
    charge_library(L, LUA_UTF8LIBNAME, utf8_count, COST_ARGUMENT_COUNT);
    charge_library(L, LUA_TABLIBNAME, table_length_cost, COST_TABLE_LENGTH);
    charge_library(L, LUA_TABLIBNAME, table_sort, COST_TABLE_SORT);
    charge_library(L, LUA_TABLIBNAME, table_range, COST_TABLE_RANGE);
    charge_library(L, LUA_TABLIBNAME, table_count, COST_ARGUMENT_COUNT);
    charge_library(L, LUA_GNAME, base_bytes, COST_BYTES_OF_ARGUMENTS);
}

/// pcall: the library's, then the limit check. Upvalue 1 is the original.
static int guarded_pcall(lua_State *L) {
    call_original(L);
    raise_if_limit_hit(L);
    return lua_gettop(L);
}

/// setmetatable without __gc: a finalizer would run during a collection,
/// which can happen outside any protected call.
static int guarded_setmetatable(lua_State *L) {
    if (lua_type(L, 2) == LUA_TTABLE) {
        static const char *const refused[] = {"__gc", "__close", NULL};
        for (const char *const *name = refused; *name != NULL; name++) {
            lua_pushstring(L, *name);
            int kind = lua_rawget(L, 2);
            lua_pop(L, 1);
            if (kind != LUA_TNIL) return luaL_error(L, "%s is not available to scripts", *name);
        }
    }
    call_original(L);
    return lua_gettop(L);
}

/// load reads text only: bytecode can crash the interpreter.
/// load's reader, charged for the bytes it hands the compiler. Upvalue 1 is the script's reader.
static int charged_reader(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 0, 1);
    if (lua_type(L, -1) == LUA_TSTRING) sluice_lua_charge(L, (long)lua_rawlen(L, -1) / SLUICE_BYTES_PER_UNIT + 1);
    return 1;
}

/// load reads text only: bytecode can crash the interpreter. A reader's
/// chunks are charged, and a limit reached inside load (which catches
/// errors and returns them) is raised again.
static int guarded_load(lua_State *L) {
    if (lua_gettop(L) < 3) lua_settop(L, 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    if (lua_type(L, 1) == LUA_TFUNCTION) {
        lua_pushvalue(L, 1);
        lua_pushcclosure(L, charged_reader, 1);
        lua_replace(L, 1);
    }
    call_original(L);
    raise_if_limit_hit(L);
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
    "local type, error, select, pcall = type, error, select, pcall\n"
    "local pack, unpack = table.pack, table.unpack\n"
    "-- xpcall's handler runs after the call has unwound, never inside the error:\n"
    "-- an error raised by the instruction hook would run it with the hook off.\n"
    "function xpcall(f, handler, ...)\n"
    "  if type(handler) ~= 'function' then error('bad argument #2 to \\'xpcall\\' (function expected)', 2) end\n"
    "  local results = pack(pcall(f, ...))\n"
    "  if results[1] then return unpack(results, 1, results.n) end\n"
    "  return false, handler(results[2])\n"
    "end\n"
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
    wrap_global(L, "setmetatable", guarded_setmetatable);
    wrap_global(L, "load", guarded_load);
    charge_libraries(L);
    sluice_lua_open_patterns(L);
    // The strings' metatable is shared by every string: a script may not change
    // it (a __close there would make every string closable, red team 2 #3).
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
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


/// Runs the function below `nargs` arguments in protected mode with the
/// hook set and the memory cap enforced; one result.
static int protected_call(sluice_lua *sandbox, int nargs, long instructions) {
    lua_State *L = sandbox->L;
    sandbox->budget = instructions;
    sandbox->deadline_ns = now_ns() + SLUICE_CALL_TIME_LIMIT_NS;
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
