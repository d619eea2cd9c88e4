import Testing
@testable import SluiceAuthHTTP

@Suite("Auth service request target")
struct AuthServiceTargetTests {
    @Test("the path and query as written, escapes kept; no path is /; the fragment is not sent",
          arguments: [
              ("http://127.0.0.1:9000/auth", "/auth"),
              ("http://127.0.0.1:9000/auth?from=sluice&x=%20y", "/auth?from=sluice&x=%20y"),
              ("http://auth.example/a%2Fb/c", "/a%2Fb/c"),
              ("http://127.0.0.1:9000", "/"),
              ("http://127.0.0.1:9000?x=1", "/?x=1"),
              ("http://127.0.0.1:9000/auth#frag", "/auth"),
              ("http://[2001:db8::1]:9000/auth", "/auth"),
          ])
    func requestTarget(url: String, expected: String) {
        #expect(HTTPAuthRouter.requestTarget(of: url) == expected)
    }
}
