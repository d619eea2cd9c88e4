/// A session's `session` table in one runtime; freed when the session ends.
final class LuaSessionTable {
    let ref: Int32
    let runtime: LuaRuntime

    init(ref: Int32, runtime: LuaRuntime) {
        self.ref = ref
        self.runtime = runtime
    }

    deinit { runtime.release(ref) }
}
