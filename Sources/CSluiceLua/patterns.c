// string.find, string.match, string.gmatch and string.gsub for scripts,
// with Lua 5.4's pattern language (manual §6.4.1), written for Sluice so
// that matching is paid for: every step of the backtracking matcher is
// charged to the call's instruction budget (sluice_lua_charge). The
// library's own matcher runs as a single VM instruction, so a pattern that
// backtracks over a long subject (".-.-.-x") would run unbounded where the
// instruction hook cannot stop it.

#define _GNU_SOURCE  // memmem
#include "sandbox_internal.h"

#include <ctype.h>
#include <string.h>

#define MAX_CAPTURES 32
#define MAX_DEPTH 200            // recursion of the matcher (as the library's)
#define CAPTURE_OPEN (-1)        // a capture not closed yet
#define CAPTURE_POSITION (-2)    // "()": the position, not a string

typedef struct {
    lua_State *L;
    const char *subject, *subject_end;
    const char *pattern_end;
    int depth;
    int captures;
    struct {
        const char *start;
        ptrdiff_t length;
    } capture[MAX_CAPTURES];
    /// Steps not yet charged (charged in batches: one budget check per 256).
    long pending;
} Matcher;

static void step(Matcher *m) {
    if (++m->pending >= 256) {
        sluice_lua_charge(m->L, m->pending);
        m->pending = 0;
    }
}

static void settle(Matcher *m) {
    if (m->pending > 0) sluice_lua_charge(m->L, m->pending);
    m->pending = 0;
}

/// The end of the single-character class starting at `p` (`x`, `.`, `%a`, `[set]`).
static const char *class_end(Matcher *m, const char *p) {
    char c = *p++;
    if (c == '%') {
        if (p >= m->pattern_end) luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (p < m->pattern_end && *p == '^') p++;
        do {  // the first character of a set may be ']'
            if (p >= m->pattern_end) luaL_error(m->L, "malformed pattern (missing ']')");
            c = *p++;
            if (c == '%') {
                if (p >= m->pattern_end) luaL_error(m->L, "malformed pattern (missing ']')");
                p++;
            }
        } while (p >= m->pattern_end || *p != ']');
        return p + 1;
    }
    return p;
}

/// Whether `c` is in class letter `letter` (%a, %d …; upper case: the complement).
static int in_class(int c, int letter) {
    int result;
    switch (tolower(letter)) {
    case 'a': result = isalpha(c); break;
    case 'c': result = iscntrl(c); break;
    case 'd': result = isdigit(c); break;
    case 'g': result = isgraph(c); break;
    case 'l': result = islower(c); break;
    case 'p': result = ispunct(c); break;
    case 's': result = isspace(c); break;
    case 'u': result = isupper(c); break;
    case 'w': result = isalnum(c); break;
    case 'x': result = isxdigit(c); break;
    case 'z': result = (c == 0); break;  // deprecated in the manual, still in Lua 5.4's library
    default: return letter == c;  // %. %% %( …: the character itself
    }
    if (isupper(letter)) result = !result;
    return result != 0;
}

/// Whether `c` is in the set from `p` ('[') to `end` (its ']').
static int in_set(int c, const char *p, const char *end) {
    int negated = 0;
    p++;
    if (*p == '^') {
        negated = 1;
        p++;
    }
    for (; p < end; p++) {
        if (*p == '%') {
            // As Lua's library: the escaped character may be the set's closing ']'.
            p++;
            if (in_class(c, (unsigned char)*p)) return !negated;
        } else if (p + 2 < end && p[1] == '-') {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2]) return !negated;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return !negated;
        }
    }
    return negated;
}

/// Whether the subject character at `s` matches the class from `p` to `end`.
static int matches_class(Matcher *m, const char *s, const char *p, const char *end) {
    if (s >= m->subject_end) return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case '%': return in_class(c, (unsigned char)p[1]);
    case '[': return in_set(c, p, end - 1);
    default: return (unsigned char)*p == c;
    }
}

static const char *match(Matcher *m, const char *s, const char *p);

/// `class*` / `class+` after its first: the longest run first, then shorter.
static const char *greedy(Matcher *m, const char *s, const char *p, const char *class_stop) {
    ptrdiff_t count = 0;
    while (matches_class(m, s + count, p, class_stop)) {
        count++;
        step(m);
    }
    for (; count >= 0; count--) {
        const char *result = match(m, s + count, class_stop + 1);
        if (result) return result;
        step(m);
    }
    return NULL;
}

/// `class-`: the shortest run first, then longer.
static const char *lazy(Matcher *m, const char *s, const char *p, const char *class_stop) {
    for (;;) {
        const char *result = match(m, s, class_stop + 1);
        if (result) return result;
        if (!matches_class(m, s, p, class_stop)) return NULL;
        s++;
        step(m);
    }
}

static const char *open_capture(Matcher *m, const char *s, const char *p, ptrdiff_t kind) {
    if (m->captures >= MAX_CAPTURES) luaL_error(m->L, "too many captures");
    m->capture[m->captures].start = s;
    m->capture[m->captures].length = kind;
    m->captures++;
    const char *result = match(m, s, p);
    if (!result) m->captures--;
    return result;
}

static const char *close_capture(Matcher *m, const char *s, const char *p) {
    int index = m->captures - 1;
    while (index >= 0 && m->capture[index].length != CAPTURE_OPEN) index--;
    if (index < 0) luaL_error(m->L, "invalid pattern capture");
    m->capture[index].length = s - m->capture[index].start;
    const char *result = match(m, s, p);
    if (!result) m->capture[index].length = CAPTURE_OPEN;
    return result;
}

/// `%bxy`: a balanced run from x to its y.
static const char *balanced(Matcher *m, const char *s, const char *p) {
    if (p + 1 >= m->pattern_end) luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->subject_end || *s != *p) return NULL;
    char open = p[0], close = p[1];
    int depth = 1;
    while (++s < m->subject_end) {
        step(m);
        if (*s == close) {
            if (--depth == 0) return s + 1;
        } else if (*s == open) {
            depth++;
        }
    }
    return NULL;
}

static const char *match(Matcher *m, const char *s, const char *p) {
    if (++m->depth > MAX_DEPTH) luaL_error(m->L, "pattern too complex");
    const char *result = NULL;
    for (;;) {
        step(m);
        if (p >= m->pattern_end) {
            result = s;
            break;
        }
        if (*p == '(') {
            result = (p + 1 < m->pattern_end && p[1] == ')') ? open_capture(m, s, p + 2, CAPTURE_POSITION)
                                                             : open_capture(m, s, p + 1, CAPTURE_OPEN);
            break;
        }
        if (*p == ')') {
            result = close_capture(m, s, p + 1);
            break;
        }
        if (*p == '$' && p + 1 == m->pattern_end) {
            result = (s == m->subject_end) ? s : NULL;
            break;
        }
        if (*p == '%' && p + 1 < m->pattern_end) {
            char next = p[1];
            if (next == 'b') {
                s = balanced(m, s, p + 2);
                if (!s) break;
                p += 4;
                continue;
            }
            if (next == 'f') {
                p += 2;
                if (p >= m->pattern_end || *p != '[') luaL_error(m->L, "missing '[' after '%%f' in pattern");
                const char *stop = class_end(m, p);
                int previous = (s == m->subject) ? '\0' : (unsigned char)s[-1];
                int current = (s < m->subject_end) ? (unsigned char)*s : '\0';
                if (!in_set(previous, p, stop - 1) && in_set(current, p, stop - 1)) {
                    p = stop;
                    continue;
                }
                break;
            }
            if (isdigit((unsigned char)next)) {
                int index = next - '1';
                if (index < 0 || index >= m->captures || m->capture[index].length == CAPTURE_OPEN) {
                    luaL_error(m->L, "invalid capture index %%%d", index + 1);
                }
                // A position capture "()" matches nothing as a back-reference (as in Lua).
                if (m->capture[index].length == CAPTURE_POSITION) break;
                size_t length = (size_t)m->capture[index].length;
                if ((size_t)(m->subject_end - s) >= length && memcmp(m->capture[index].start, s, length) == 0) {
                    s += length;
                    p += 2;
                    continue;
                }
                break;
            }
        }
        const char *stop = class_end(m, p);
        int here = matches_class(m, s, p, stop);
        char quantifier = stop < m->pattern_end ? *stop : '\0';
        if (quantifier == '?') {
            if (here && (result = match(m, s + 1, stop + 1)) != NULL) break;
            p = stop + 1;
            continue;
        }
        if (quantifier == '+') {
            result = here ? greedy(m, s + 1, p, stop) : NULL;
            break;
        }
        if (quantifier == '*') {
            result = greedy(m, s, p, stop);
            break;
        }
        if (quantifier == '-') {
            result = lazy(m, s, p, stop);
            break;
        }
        if (!here) break;
        s++;
        p = stop;
    }
    m->depth--;
    return result;
}

// MARK: - The library functions

static void start(Matcher *m, lua_State *L, const char *subject, size_t length, const char *pattern, size_t plength) {
    m->L = L;
    m->subject = subject;
    m->subject_end = subject + length;
    m->pattern_end = pattern + plength;
    m->depth = 0;
    m->captures = 0;
    m->pending = 0;
}

/// Pushes capture `index` (the whole match from `s` to `e` when there are none).
static void push_capture(Matcher *m, int index, const char *s, const char *e) {
    if (index >= m->captures) {
        if (index != 0) luaL_error(m->L, "invalid capture index %%%d", index + 1);
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t length = m->capture[index].length;
    if (length == CAPTURE_OPEN) luaL_error(m->L, "unfinished capture");
    if (length == CAPTURE_POSITION) {
        lua_pushinteger(m->L, (lua_Integer)(m->capture[index].start - m->subject) + 1);
    } else {
        lua_pushlstring(m->L, m->capture[index].start, (size_t)length);
    }
}

/// Pushes every capture (or the whole match); returns how many.
static int push_captures(Matcher *m, const char *s, const char *e, int whole_if_none) {
    int count = (m->captures == 0 && whole_if_none) ? 1 : m->captures;
    luaL_checkstack(m->L, count, "too many captures");
    for (int i = 0; i < count; i++) push_capture(m, i, s, e);
    return count;
}

/// A start position from a Lua index (1-based, negative from the end).
static size_t start_index(lua_Integer index, size_t length) {
    if (index > 0) return (size_t)index;
    if (index == 0) return 1;
    if (index < -(lua_Integer)length) return 1;
    return length + (size_t)index + 1;
}

static int has_specials(const char *pattern, size_t length) {
    for (size_t i = 0; i < length; i++) {
        if (strchr("^$*+?.([%-", pattern[i]) && pattern[i] != '\0') return 1;
    }
    return 0;
}

static int find_or_match(lua_State *L, int find) {
    size_t length, plength;
    const char *subject = luaL_checklstring(L, 1, &length);
    const char *pattern = luaL_checklstring(L, 2, &plength);
    size_t init = start_index(luaL_optinteger(L, 3, 1), length);
    if (init > length + 1) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !has_specials(pattern, plength))) {
        sluice_lua_charge(L, (long)(length - init + 1) / 16 + 1);
        if (plength == 0) {
            lua_pushinteger(L, (lua_Integer)init);
            lua_pushinteger(L, (lua_Integer)init - 1);
            return 2;
        }
        const char *found = memmem(subject + init - 1, length - init + 1, pattern, plength);
        if (!found) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(found - subject) + 1);
        lua_pushinteger(L, (lua_Integer)(found - subject) + (lua_Integer)plength);
        return 2;
    }
    Matcher m;
    int anchored = plength > 0 && *pattern == '^';
    if (anchored) {
        pattern++;
        plength--;
    }
    start(&m, L, subject, length, pattern, plength);
    const char *s = subject + init - 1;
    do {
        m.captures = 0;
        m.depth = 0;
        const char *e = match(&m, s, pattern);
        if (e) {
            settle(&m);
            if (find) {
                lua_pushinteger(L, (lua_Integer)(s - subject) + 1);
                lua_pushinteger(L, (lua_Integer)(e - subject));
                return push_captures(&m, NULL, NULL, 0) + 2;
            }
            return push_captures(&m, s, e, 1);
        }
    } while (s++ < m.subject_end && !anchored);
    settle(&m);
    luaL_pushfail(L);
    return 1;
}

static int sluice_find(lua_State *L) { return find_or_match(L, 1); }
static int sluice_match(lua_State *L) { return find_or_match(L, 0); }

/// gmatch's iterator: upvalues subject, pattern, next position, end of the last match.
static int gmatch_next(lua_State *L) {
    size_t length, plength;
    const char *subject = lua_tolstring(L, lua_upvalueindex(1), &length);
    const char *pattern = lua_tolstring(L, lua_upvalueindex(2), &plength);
    lua_Integer position = lua_tointeger(L, lua_upvalueindex(3));
    lua_Integer last = lua_tointeger(L, lua_upvalueindex(4));
    Matcher m;
    start(&m, L, subject, length, pattern, plength);
    for (; position <= (lua_Integer)length; position++) {
        const char *s = subject + position;
        m.captures = 0;
        m.depth = 0;
        const char *e = match(&m, s, pattern);
        if (e && e - subject != last) {
            settle(&m);
            lua_pushinteger(L, e - subject);
            lua_copy(L, -1, lua_upvalueindex(3));
            lua_copy(L, -1, lua_upvalueindex(4));
            lua_pop(L, 1);
            return push_captures(&m, s, e, 1);
        }
    }
    settle(&m);
    lua_pushinteger(L, (lua_Integer)length + 1);
    lua_replace(L, lua_upvalueindex(3));
    return 0;
}

static int sluice_gmatch(lua_State *L) {
    size_t length;
    luaL_checklstring(L, 1, &length);
    luaL_checkstring(L, 2);
    size_t start = start_index(luaL_optinteger(L, 3, 1), length) - 1;
    if (start > length) start = length + 1;  // past the end: no matches (as Lua)
    lua_settop(L, 2);
    lua_pushinteger(L, (lua_Integer)start);
    lua_pushinteger(L, -1);
    lua_pushcclosure(L, gmatch_next, 4);
    return 1;
}

/// Appends the replacement for the match from `s` to `e` (repl at index 3).
static void replace(Matcher *m, luaL_Buffer *b, const char *s, const char *e) {
    lua_State *L = m->L;
    switch (lua_type(L, 3)) {
    case LUA_TFUNCTION: {
        lua_pushvalue(L, 3);
        int count = push_captures(m, s, e, 1);
        lua_call(L, count, 1);
        break;
    }
    case LUA_TTABLE:
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
        break;
    default: {  // a string with %0-%9 and %%
        size_t length;
        const char *text = lua_tolstring(L, 3, &length);
        sluice_lua_charge(L, (long)length / 16 + 1);
        for (size_t i = 0; i < length; i++) {
            if (text[i] != '%') {
                luaL_addchar(b, text[i]);
                continue;
            }
            i++;
            if (i < length && text[i] == '%') {
                luaL_addchar(b, '%');
            } else if (i < length && isdigit((unsigned char)text[i])) {
                if (text[i] == '0') {
                    luaL_addlstring(b, s, (size_t)(e - s));
                } else {
                    push_capture(m, text[i] - '1', s, e);
                    luaL_tolstring(L, -1, NULL);
                    lua_remove(L, -2);
                    luaL_addvalue(b);
                }
            } else {
                luaL_error(L, "invalid use of '%%' in replacement string");
            }
        }
        return;
    }
    }
    if (!lua_toboolean(L, -1)) {  // nil or false: keep the original text
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    } else {
        luaL_addvalue(b);
    }
}

static int sluice_gsub(lua_State *L) {
    size_t length, plength;
    const char *subject = luaL_checklstring(L, 1, &length);
    const char *pattern = luaL_checklstring(L, 2, &plength);
    int kind = lua_type(L, 3);
    luaL_argexpected(L, kind == LUA_TNUMBER || kind == LUA_TSTRING || kind == LUA_TFUNCTION || kind == LUA_TTABLE, 3,
                     "string/function/table");
    lua_Integer most = luaL_optinteger(L, 4, (lua_Integer)length + 1);
    lua_settop(L, 3);
    int anchored = plength > 0 && *pattern == '^';
    if (anchored) {
        pattern++;
        plength--;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    Matcher m;
    start(&m, L, subject, length, pattern, plength);
    const char *s = subject, *last = NULL;
    lua_Integer count = 0;
    while (count < most) {
        m.captures = 0;
        m.depth = 0;
        const char *e = match(&m, s, pattern);
        if (e && e != last) {
            count++;
            settle(&m);
            replace(&m, &b, s, e);
            s = last = e;
        } else if (s < m.subject_end) {
            luaL_addchar(&b, *s++);
        } else {
            break;
        }
        if (anchored) break;
    }
    settle(&m);
    luaL_addlstring(&b, s, (size_t)(m.subject_end - s));
    luaL_pushresult(&b);
    lua_pushinteger(L, count);
    return 2;
}

void sluice_lua_open_patterns(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"find", sluice_find}, {"match", sluice_match}, {"gmatch", sluice_gmatch}, {"gsub", sluice_gsub},
        {NULL, NULL},
    };
    lua_getglobal(L, LUA_STRLIBNAME);
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
