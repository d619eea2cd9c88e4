import IMAPWire
import NIOCore

/// Logs in to the upstream server on the client's behalf (struct, no I/O).
///
/// Reads the greeting, upgrades with STARTTLS when configured, learns the
/// capabilities, then logs in with AUTHENTICATE PLAIN when the server offers
/// it (BASE64 needs no quoting) and LOGIN otherwise; finally makes sure it
/// knows the post-login capabilities, which the client gets in its tagged OK.
/// With `forward`, an `ID` command carrying the client's address goes
/// first, pipelined with the login (its answer is consumed).
/// Nothing the upstream says here reaches the client, except the response
/// code and text of a refused login.
struct UpstreamLoginStateMachine {
    enum Action {
        case send(ByteBuffer)
        /// The server accepted STARTTLS: start TLS on the upstream connection
        /// (whatever it sent in plaintext after its OK is discarded).
        case startTLS
        /// Logged in; `delimiter` when it was asked for (and the server has one).
        case succeeded(capabilities: [String], delimiter: UInt8?)
        /// Login failed: the tagged response for the client (`NO [code] text`).
        case failed(response: String, reason: String)
        case none
    }

    private enum State {
        case greeting
        case startTLS
        case tlsHandshake
        case capability
        /// Waiting for `+` to send the next part of the login command.
        case login(remaining: [ByteBuffer])
        case postLoginCapability
        /// The proxy's own `LIST "" ""` (for the filters): its answer is consumed here.
        case delimiter
        case done
    }

    private var state: State = .greeting
    private let credentials: UpstreamCredentials
    private let useStartTLS: Bool
    private let learnDelimiter: Bool
    private let forward: ForwardedAddresses?
    private var delimiter: UInt8?
    private var capabilities: [String] = []
    private var tagCounter = 0
    private var currentTag = ""
    /// The server's SASL error challenge to a bearer token (base64 JSON,
    /// RFC 7628 §3.2.3): the client gets it too before the refusal.
    private(set) var saslChallenge: String?

    /// `learnDelimiter`: after login, ask the hierarchy delimiter with
    /// `LIST "" ""` (RFC 3501 §6.3.8) before the relay starts, so no client
    /// command is in flight and tags cannot collide.
    init(credentials: UpstreamCredentials, useStartTLS: Bool, learnDelimiter: Bool = false,
         forward: ForwardedAddresses? = nil) {
        self.credentials = credentials
        self.useStartTLS = useStartTLS
        self.learnDelimiter = learnDelimiter
        self.forward = forward
    }

    /// A response frame from the upstream.
    mutating func receive(_ frame: Frame) -> Action {
        if passesOver(frame) { return .none }
        let response = try? frame.response()
        switch state {
        case .greeting:
            guard case .status(let status) = response, status.tag == nil else {
                return .failed(response: UnavailableReply.tagged, reason: "upstream greeting malformed")
            }
            switch status.status {
            case .ok:
                if let code = status.text.code, let capability = CapabilityResponse(code) {
                    capabilities = capability.capabilities
                }
                if useStartTLS {
                    state = .startTLS
                    return .send(command("STARTTLS"))
                }
                return capabilities.isEmpty ? askCapabilities() : startLogin()
            case .bye, .no, .bad:
                return .failed(response: UnavailableReply.tagged, reason: "upstream refused the connection")
            case .preauth:
                return .failed(response: UnavailableReply.tagged, reason: "upstream greeted with PREAUTH")
            }
        case .startTLS:
            guard case .status(let status) = response, status.tag == currentTag else { return .none }
            guard status.status == .ok else {
                return .failed(response: UnavailableReply.tagged, reason: "upstream refused STARTTLS")
            }
            state = .tlsHandshake
            capabilities = []  // RFC 3501 §6.2.1: forget what was learned before TLS
            return .startTLS
        case .tlsHandshake:
            return .failed(response: UnavailableReply.tagged, reason: "upstream sent data before the TLS handshake")
        case .capability, .postLoginCapability:
            if case .data(let data) = response, let capability = CapabilityResponse(data) {
                capabilities = capability.capabilities
                return .none
            }
            guard case .status(let status) = response, status.tag == currentTag else { return .none }
            if case .postLoginCapability = state {
                return loggedIn()
            }
            guard status.status == .ok else {
                return .failed(response: UnavailableReply.tagged, reason: "upstream CAPABILITY failed")
            }
            return startLogin()
        case .login(var remaining):
            if frame.kind == .continuationRequest {
                if remaining.isEmpty, credentials.bearer != nil, saslChallenge == nil {
                    // A refused token: answer the error challenge (an empty response), then the NO comes.
                    var line = frame.segments.first.map { Array($0.readableBytesView) } ?? []
                    while let last = line.last, last == 0x0A || last == 0x0D { line.removeLast() }
                    let text = line.dropFirst(2).filter { $0 > 0x20 && $0 < 0x7F }  // "+ " then base64
                    saslChallenge = String(decoding: text, as: UTF8.self)
                    // RFC 7628 §3.2.3: OAUTHBEARER answers with %x01; XOAUTH2 (Google's) with an empty response.
                    return .send(ByteBuffer(string: credentials.bearer == .oauthbearer ? "AQ==\r\n" : "\r\n"))
                }
                guard !remaining.isEmpty else {
                    return .failed(response: UnavailableReply.tagged, reason: "unexpected continuation")
                }
                let next = remaining.removeFirst()
                state = .login(remaining: remaining)
                return .send(next)
            }
            if case .data(let data) = response, let capability = CapabilityResponse(data) {
                capabilities = capability.capabilities
                return .none
            }
            guard case .status(let status) = response, status.tag == currentTag else { return .none }
            guard status.status == .ok else {
                return .failed(response: clientResponse(for: status), reason: "upstream refused the login")
            }
            if let code = status.text.code, let capability = CapabilityResponse(code) {
                capabilities = capability.capabilities
                return loggedIn()
            }
            state = .postLoginCapability
            capabilities = []
            return .send(command("CAPABILITY"))
        case .delimiter:
            if case .data(let data) = response, let list = ListResponse(data) {
                delimiter = list.delimiter
                return .none
            }
            guard case .status(let status) = response, status.tag == currentTag else { return .none }
            state = .done
            return .succeeded(capabilities: capabilities, delimiter: delimiter)
        case .done:
            return .none
        }
    }

    /// Whether `frame` is one the current state has no use for, told from
    /// its kind, tag and name without parsing it: the answers to the ID
    /// and the server's other untagged data (parsing them was a large part
    /// of a login's cost, docs/performance.md). The states that wait for a
    /// command take its tagged answer and the untagged data it asked for
    /// (`LIST` for the proxy's own `LIST "" ""`, not LSUB or XLIST); only
    /// the greeting and the TLS handshake look at every frame.
    private func passesOver(_ frame: Frame) -> Bool {
        let wanted: String?
        switch state {
        case .greeting, .tlsHandshake: return false
        case .done: return true
        case .startTLS: wanted = nil
        case .capability, .postLoginCapability: wanted = "CAPABILITY"
        case .login:
            if frame.kind == .continuationRequest { return false }
            wanted = "CAPABILITY"
        case .delimiter: wanted = "LIST"
        }
        switch frame.kind {
        case .taggedResponse: return frame.tag != currentTag
        case .untaggedResponse: return wanted == nil || frame.name != wanted
        default: return true
        }
    }

    private mutating func loggedIn() -> Action {
        guard learnDelimiter else {
            state = .done
            return .succeeded(capabilities: capabilities, delimiter: nil)
        }
        state = .delimiter
        return .send(command("LIST \"\" \"\""))
    }

    /// The TLS handshake with the upstream completed (after STARTTLS).
    mutating func tlsEstablished() -> Action {
        guard case .tlsHandshake = state else { return .none }
        return askCapabilities()
    }

    private mutating func askCapabilities() -> Action {
        state = .capability
        return .send(command("CAPABILITY"))
    }

    private mutating func startLogin() -> Action {
        // A handful of questions to ~10 names: compared in place, no set of upper-cased copies.
        let names = capabilities
        let has = { (name: String) in names.contains { UpstreamLoginStateMachine.sameName($0, name) } }
        if has("LOGINDISABLED") {
            return .failed(response: UnavailableReply.tagged,
                           reason: "upstream disallows login on this connection (configure TLS to it)")
        }
        // The ID goes first, in the same write; its tagged answer is not the
        // login's tag, so the login state below passes over it.
        var first = ByteBuffer()
        if let forward, has("ID") {
            nextTag()
            first.writeString("\(currentTag) ID \(forward.idParameters)\r\n")
        }
        nextTag()
        if let bearer = credentials.bearer {
            guard has("AUTH=\(bearer.rawValue)") else {
                return .failed(response: UnavailableReply.tagged, reason: "upstream does not offer \(bearer.rawValue)")
            }
            let response = Base64.encode(bearer.initialResponse(user: credentials.authenticationIdentity,
                                                                token: credentials.password))
            if has("SASL-IR") {
                state = .login(remaining: [])
                first.writeString("\(currentTag) AUTHENTICATE \(bearer.rawValue) \(response)\r\n")
                return .send(first)
            }
            state = .login(remaining: [ByteBuffer(string: response + "\r\n")])
            first.writeString("\(currentTag) AUTHENTICATE \(bearer.rawValue)\r\n")
            return .send(first)
        }
        if has("AUTH=PLAIN") {
            let response = Base64.encode(credentials.authorizationIdentity + [0] + credentials.authenticationIdentity
                                         + [0] + credentials.password)
            if has("SASL-IR") {
                state = .login(remaining: [])
                first.writeString("\(currentTag) AUTHENTICATE PLAIN \(response)\r\n")
                return .send(first)
            }
            state = .login(remaining: [ByteBuffer(string: response + "\r\n")])
            first.writeString("\(currentTag) AUTHENTICATE PLAIN\r\n")
            return .send(first)
        }
        let receiver: EncodingOptions.Receiver = has("LITERAL+") ? .serverWithLiteralPlus
            : (has("LITERAL-") ? .serverWithLiteralMinus : .server)
        var encoder = IMAPEncoder(options: EncodingOptions(receiver: receiver))
        encoder.writeRaw("\(currentTag) LOGIN ")
        encoder.writeAString(credentials.loginName)
        encoder.writeSpace()
        encoder.writeAString(credentials.password)
        let encoded = encoder.finish()
        // Split where a synchronizing literal must wait for the server's "+".
        let parts = encoded.synchronizingParts()
        state = .login(remaining: Array(parts.dropFirst()))
        first.writeImmutableBuffer(parts[0])
        return .send(first)
    }

    /// Whether capability `name` is `upper` (upper-case ASCII), ignoring ASCII case.
    static func sameName(_ name: String, _ upper: String) -> Bool {
        var name = name, upper = upper
        return name.withUTF8 { name in
            upper.withUTF8 { upper in
                name.count == upper.count
                    && zip(name, upper).allSatisfy { ($0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0) == $1 }
            }
        }
    }

    private mutating func nextTag() {
        tagCounter += 1
        currentTag = "sluice\(tagCounter)"
    }

    private mutating func command(_ text: String) -> ByteBuffer {
        nextTag()
        return ByteBuffer(string: "\(currentTag) \(text)\r\n")
    }

    /// The upstream's NO/BAD for the client, keeping its response code.
    private func clientResponse(for status: StatusResponse) -> String {
        var code = ""
        if let responseCode = status.text.code {
            code = "[\(responseCode.name)" + (responseCode.rawArguments.isEmpty ? "" : " " + String(decoding: responseCode.rawArguments, as: UTF8.self)) + "] "
        }
        // The server's words go to the client on one line: printable ASCII
        // only, and no trailing literal announcement the client would obey.
        var text = String(decoding: status.text.text.filter { $0 >= 0x20 && $0 < 0x7F }, as: UTF8.self)
        if let brace = text.lastIndex(of: "{"), text.hasSuffix("}") { text = String(text[..<brace]) }
        code = String(code.filter { $0.isASCII && !$0.isNewline && $0 != "{" })
        return "NO \(code)\(text.isEmpty ? "Authentication failed." : text)"
    }
}

/// What the proxy logs in upstream with: the client's own name and password,
/// or a master user's on the client's behalf.
struct UpstreamCredentials {
    /// SASL authorization identity (the user acted for); empty for a plain login.
    var authorizationIdentity: [UInt8]
    /// SASL authentication identity (whose password this is).
    var authenticationIdentity: [UInt8]
    var password: [UInt8]
    /// The LOGIN command's user name (`user*master` for a master login).
    var loginName: [UInt8]
    /// The client logged in with a bearer token (`password`): the upstream
    /// gets the same mechanism and token. A master login uses its password.
    var bearer: BearerMechanism?

    init(_ login: UpstreamLogin, clientPassword: [UInt8], bearer: BearerMechanism? = nil) {
        switch login {
        case .asUser(let name):
            authorizationIdentity = []
            authenticationIdentity = Array(name.utf8)
            password = clientPassword
            loginName = Array(name.utf8)
            self.bearer = bearer
        case .masterUser(let user, let masterUser, let masterPassword, let separator):
            authorizationIdentity = Array(user.utf8)
            authenticationIdentity = Array(masterUser.utf8)
            password = masterPassword
            loginName = Array((user + separator + masterUser).utf8)
            self.bearer = nil
        }
    }
}

/// The addresses an upstream is told in an `ID` command before login
/// (the fields Dovecot's proxy sends and Dovecot accepts from
/// `login_trusted_networks`). They come from the sockets, never from the client.
struct ForwardedAddresses: Equatable {
    var clientIP: String
    var clientPort: Int
    /// The address the client connected to (the proxy's listener).
    var localIP: String
    var localPort: Int
    /// What the client said of itself in its own `ID` before login (name,
    /// version, os, …), passed on as Dovecot's proxy does with
    /// `imap_id_retain`; already sifted by `forwardable(_:)`.
    var clientFields: [IDParameters.Field] = []
    /// How many more proxies the login may pass (`x-proxy-ttl`, as Dovecot's
    /// proxy sends it): one less than this proxy was given (`ProxyHops`).
    var proxyTTL = ProxyHops.initial - 1

    /// The parenthesized list of `ID` (RFC 2971): the client's fields, then
    /// the proxy's. Addresses and ports need no escaping.
    var idParameters: String {
        var text = "("
        for field in clientFields {
            text += ForwardedAddresses.quoted(field.key) + " " + (field.value.map(ForwardedAddresses.quoted) ?? "NIL") + " "
        }
        return text + "\"x-originating-ip\" \"\(clientIP)\" \"x-originating-port\" \"\(clientPort)\" "
            + "\"x-connected-ip\" \"\(localIP)\" \"x-connected-port\" \"\(localPort)\" "
            + "\"x-proxy-ttl\" \"\(proxyTTL)\")"
    }

    /// The client's fields that may go upstream. `x-` fields never do: a
    /// server that trusts the proxy would take a client's own
    /// `x-originating-ip` (or session id) as the proxy's word. The rest must
    /// fit RFC 2971 §3.3 — names up to 30 octets, values up to 1,024, 30
    /// pairs in all (five are the proxy's) — and be printable ASCII, so they
    /// travel as quoted strings; fields that do not are left out.
    static func forwardable(_ fields: [IDParameters.Field]) -> [IDParameters.Field] {
        let printable = { (text: String) in text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F } }
        let kept = fields.filter { field in
            let key = field.key
            guard (1...30).contains(key.utf8.count), printable(key), !key.lowercased().hasPrefix("x-") else { return false }
            guard let value = field.value else { return true }
            return value.utf8.count <= 1024 && printable(value)
        }
        return Array(kept.prefix(25))
    }

    private static func quoted(_ text: String) -> String {
        var result = "\""
        for character in text.unicodeScalars {
            if character == "\"" || character == "\\" { result += "\\" }
            result.unicodeScalars.append(character)
        }
        return result + "\""
    }
}

extension ForwardedAddresses {
    /// `nil` unless both are IP socket addresses.
    init?(client: SocketAddress?, local: SocketAddress?, clientID: IDParameters? = nil) {
        guard let clientIP = client?.ipAddress, let clientPort = client?.port,
              let localIP = local?.ipAddress, let localPort = local?.port else { return nil }
        self.init(clientIP: clientIP, clientPort: clientPort, localIP: localIP, localPort: localPort,
                  clientFields: ForwardedAddresses.forwardable(clientID?.fields ?? []),
                  proxyTTL: ProxyHops.left(after: clientID) - 1)
    }
}
