import ArgumentParser
import Dispatch
import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// `sluice-bench SCENARIO`: a load generator for IMAP servers and proxies.
/// Each run prints one JSON line; scripts/bench-compare runs the scenarios
/// against Dovecot directly, through nginx and through Sluice, and prints
/// the table (docs/performance.md). Not a test: it asserts only that the
/// protocol went right.
@main
struct SluiceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "IMAP load generator: fetch-large, latency, logins, idle, sync, tls, list; and nio-relay, a reference relay.")

    enum Scenario: String, ExpressibleByArgument, CaseIterable {
        case fetchLarge = "fetch-large", latency, logins, idle, sync, tls, list
        /// Not a scenario: runs a minimal NIO relay on --host/--port to --upstream-port until killed.
        case nioRelay = "nio-relay"
    }

    @Argument(help: "fetch-large, latency, logins, idle, sync, tls, list; or nio-relay (a reference relay, runs until killed)")
    var scenario: Scenario

    @Option(help: "Server or proxy address.") var host = "127.0.0.1"
    @Option(help: "Port.") var port: Int
    @Option(help: "A label for the JSON line (direct, nginx, sluice).") var label = "target"
    @Option(help: "User for single-session scenarios.") var user = "alice"
    @Option(help: "Password (default secret-USER).") var password: String?
    @Option(help: "UID of the large message (fetch-large, tls).") var largeUID = 121
    @Option(name: .customLong("range-uids"), help: "UID range fetched in one command (fetch-large, tls).") var rangeUIDs = "101:120"
    @Option(help: "Messages in the mailbox, UIDs 1…N (sync).") var messages = 122
    @Option(help: "Round trips per command (latency, list).") var count = 2000
    @Option(name: .customLong("repeat"), help: "Times each fetch runs; the median is reported (fetch-large, tls).") var repeats = 3
    @Option(help: "Concurrent clients (logins).") var clients = 8
    @Option(help: "Seconds to run (logins).") var seconds = 5.0
    @Option(help: "Logins per client, instead of --seconds (logins): a fixed amount of work, for instruction counts.")
    var loginsPerClient: Int?
    @Option(help: "Accounts USERPREFIX0001… to spread logins over (logins).") var accounts = 200
    @Option(help: "Account name prefix (logins, idle).") var userPrefix = "user"
    @Option(help: "Idle sessions to open (idle).") var sessions = 100
    @Option(help: "PID of the proxy: its memory per session (idle), its CPU time per round trip (latency) and per login (logins).") var pid: Int32?
    @Option(help: "Commands in flight during the body fetches (sync).") var window = 16
    @Option(help: "CA file to verify the TLS server with (tls); without it, no verification.") var ca: String?
    @Option(help: "Port of the server the relay forwards to, on --host (nio-relay).") var upstreamPort: Int?

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let result: [String: String]
        switch scenario {
        case .fetchLarge: result = try await fetchLarge(tls: nil, group: group)
        case .tls:
            var configuration = TLSConfiguration.makeClientConfiguration()
            if let ca { configuration.trustRoots = .file(ca) } else { configuration.certificateVerification = .none }
            result = try await fetchLarge(tls: try NIOSSLContext(configuration: configuration), group: group)
        case .latency: result = try await latency(group: group)
        case .logins: result = try await logins(group: group)
        case .idle: result = try await idle(group: group)
        case .sync: result = try await sync(group: group)
        case .list: result = try await list(group: group)
        case .nioRelay:
            guard let upstreamPort else { throw ValidationError("nio-relay needs --upstream-port") }
            try await NIORelay.run(listenHost: host, listenPort: port,
                                   upstream: try SocketAddress(ipAddress: host, port: upstreamPort))
            return
        }
        var line = "{\"scenario\":\"\(scenario.rawValue)\",\"target\":\"\(label)\""
        for (key, value) in result.sorted(by: { $0.key < $1.key }) { line += ",\"\(key)\":\(value)" }
        print(line + "}")
    }

    private func login(_ connection: BenchConnection, user: String) async throws {
        let reply = try await connection.run("LOGIN \(user) \(password ?? "secret-\(user)")")
        guard reply.status == "OK" else { throw BenchError("LOGIN \(user): \(reply.status)") }
        let select = try await connection.run("SELECT INBOX")
        guard select.status == "OK" else { throw BenchError("SELECT: \(select.status)") }
    }

    /// MB/s (10^6 bytes) from command to tagged OK.
    private func fetchLarge(tls: NIOSSLContext?, group: EventLoopGroup) async throws -> [String: String] {
        let connection = try await BenchConnection.connect(host: host, port: port, tls: tls, group: group)
        try await login(connection, user: user)
        var result: [String: String] = [:]
        for (key, command) in [("large", "UID FETCH \(largeUID) BODY.PEEK[]"), ("range", "UID FETCH \(rangeUIDs) BODY.PEEK[]")] {
            // One fetch takes tens of milliseconds: the median of a few is
            // much steadier than one on a machine shared with the server.
            var rates: [Double] = []
            for _ in 0..<max(1, repeats) {
                let start = DispatchTime.now().uptimeNanoseconds
                let reply = try await connection.run(command)
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                guard reply.status == "OK", reply.bytes > 10_000 else { throw BenchError("\(command): \(reply.status), \(reply.bytes) bytes") }
                rates.append(Double(reply.bytes) / elapsed / 1e6)
                result["\(key)_bytes"] = "\(reply.bytes)"
            }
            result["\(key)_mb_s"] = format(rates.sorted()[rates.count / 2])
        }
        await connection.close()
        return result
    }

    /// p50/p99/p99.9 round trips in µs, one command in flight.
    private func latency(group: EventLoopGroup) async throws -> [String: String] {
        let connection = try await BenchConnection.connect(host: host, port: port, tls: nil, group: group)
        try await login(connection, user: user)
        var result: [String: String] = [:]
        let cpuBefore = pid.flatMap(cpuTime(of:))
        for (key, command) in [("flags", "UID FETCH 1 (FLAGS)"), ("noop", "NOOP")] {
            var samples: [Double] = []
            samples.reserveCapacity(count)
            for _ in 0..<count {
                let start = DispatchTime.now().uptimeNanoseconds
                let reply = try await connection.run(command)
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
                guard reply.status == "OK" else { throw BenchError("\(command): \(reply.status)") }
            }
            samples.sort()
            for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
                result["\(key)_\(name)_us"] = format(samples[min(samples.count - 1, Int(Double(samples.count) * q))])
            }
        }
        if let cpuBefore, let cpuAfter = pid.flatMap(cpuTime(of:)) {
            result.merge(cpuAfter.since(cpuBefore).perOperation(2 * count, name: "round_trip")) { $1 }
        }
        await connection.close()
        return result
    }

    /// `LIST "" "*"` round trips (a user with many folders: rules that
    /// read every LIST line are what this measures), with the bytes of the
    /// answer (hidden folders make it shorter) and the proxy's CPU per LIST.
    private func list(group: EventLoopGroup) async throws -> [String: String] {
        let connection = try await BenchConnection.connect(host: host, port: port, tls: nil, group: group)
        try await login(connection, user: user)
        let cpuBefore = pid.flatMap(cpuTime(of:))
        var samples: [Double] = []
        var bytes = 0
        for _ in 0..<count {
            let start = DispatchTime.now().uptimeNanoseconds
            let reply = try await connection.run("LIST \"\" \"*\"")
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
            guard reply.status == "OK" else { throw BenchError("LIST: \(reply.status)") }
            bytes = reply.bytes
        }
        samples.sort()
        var result = ["list_p50_us": format(samples[samples.count / 2]), "list_bytes": "\(bytes)"]
        if let cpuBefore, let cpuAfter = pid.flatMap(cpuTime(of:)) {
            result.merge(cpuAfter.since(cpuBefore).perOperation(count, name: "list")) { $1 }
        }
        await connection.close()
        return result
    }

    /// Logins per second and p99 login latency (connect to LOGIN OK).
    private func logins(group: EventLoopGroup) async throws -> [String: String] {
        let cpuBefore = pid.flatMap(cpuTime(of:))
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        let started = DispatchTime.now().uptimeNanoseconds
        let perClient = try await withThrowingTaskGroup(of: [Double].self) { tasks in
            for client in 0..<clients {
                tasks.addTask {
                    var samples: [Double] = []
                    var index = client
                    while loginsPerClient.map({ samples.count < $0 }) ?? (DispatchTime.now().uptimeNanoseconds < deadline) {
                        let user = accountName(index % accounts + 1)
                        index += clients
                        let start = DispatchTime.now().uptimeNanoseconds
                        let connection = try await BenchConnection.connect(host: host, port: port, tls: nil, group: group)
                        let reply = try await connection.run("LOGIN \(user) secret-\(user)")
                        guard reply.status == "OK" else { throw BenchError("LOGIN \(user): \(reply.status)") }
                        samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
                        _ = try await connection.run("SELECT INBOX")
                        _ = try? await connection.run("LOGOUT")
                        await connection.close()
                    }
                    return samples
                }
            }
            var all: [[Double]] = []
            for try await samples in tasks { all.append(samples) }
            return all
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let samples = perClient.flatMap { $0 }.sorted()
        guard !samples.isEmpty else { throw BenchError("no login completed") }
        var result = [
            "logins_per_s": format(Double(samples.count) / elapsed),
            "login_p99_us": format(samples[min(samples.count - 1, Int(Double(samples.count) * 0.99))]),
            "logins": "\(samples.count)",
        ]
        // Sessions end after their LOGOUT answer: let the proxy finish closing them.
        try await Task.sleep(nanoseconds: 200_000_000)
        if let cpuBefore, let cpuAfter = pid.flatMap(cpuTime(of:)) {
            result.merge(cpuAfter.since(cpuBefore).perOperation(samples.count, name: "login")) { $1 }
        }
        return result
    }

    /// Memory of `--pid` per idle session (after − before, divided by N).
    private func idle(group: EventLoopGroup) async throws -> [String: String] {
        let before = pid.flatMap(memory(of:))
        var connections: [BenchConnection] = []
        var failed = 0
        for index in 0..<sessions {
            let user = accountName(index % accounts + 1)
            do {
                let connection = try await BenchConnection.connect(host: host, port: port, tls: nil, group: group)
                try await login(connection, user: user)
                try await connection.sendAwaitingContinuation("i IDLE\r\n").get()
                connections.append(connection)
            } catch {
                failed += 1
            }
        }
        try await Task.sleep(nanoseconds: 1_000_000_000)
        let after = pid.flatMap(memory(of:))
        let alive = connections.filter(\.isActive).count
        for connection in connections { await connection.close() }
        var result = ["sessions": "\(sessions)", "held": "\(alive)", "failed": "\(failed)"]
        if let before, let after, alive > 0 {
            result["rss_kb_per_session"] = format(Double(after.rss - before.rss) / Double(alive))
            result["pss_kb_per_session"] = format(Double(after.pss - before.pss) / Double(alive))
        }
        return result
    }

    /// A mailbox sync: flags of everything, then every body, `window` commands in flight.
    private func sync(group: EventLoopGroup) async throws -> [String: String] {
        let start = DispatchTime.now().uptimeNanoseconds
        let connection = try await BenchConnection.connect(host: host, port: port, tls: nil, group: group)
        try await login(connection, user: user)
        let flags = try await connection.run("UID FETCH 1:* (UID FLAGS)")
        guard flags.status == "OK" else { throw BenchError("UID FETCH FLAGS: \(flags.status)") }
        let search = try await connection.run("UID SEARCH ALL")
        guard search.status == "OK" else { throw BenchError("UID SEARCH: \(search.status)") }
        let total = messages
        var bytes = 0
        var next = 1
        var inFlight: [EventLoopFuture<BenchConnection.Reply>] = []
        while next <= total || !inFlight.isEmpty {
            while next <= total && inFlight.count < window {
                inFlight.append(connection.send("UID FETCH \(next) BODY.PEEK[]"))
                next += 1
            }
            let reply = try await inFlight.removeFirst().get()
            guard reply.status == "OK" else { throw BenchError("body fetch: \(reply.status)") }
            bytes += reply.bytes
        }
        await connection.close()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return ["ms": format(elapsed * 1000), "bytes": "\(bytes)", "messages": "\(total)"]
    }

    /// `user0001` style names (scripts/bench-compare creates them).
    private func accountName(_ number: Int) -> String {
        let digits = String(number)
        return userPrefix + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

}

/// A figure for the JSON line, to one decimal.
func format(_ value: Double) -> String {
    String(Double(Int((value * 10).rounded())) / 10)
}

/// CPU time a process has used, all its threads (from /proc).
struct CPUTime {
    /// On-CPU nanoseconds, summed over /proc/PID/task/*/schedstat (exact).
    var nanoseconds: Double
    /// User and system time from /proc/PID/stat (clock ticks, 10 ms: a split, not a measure).
    var userTicks: Double
    var systemTicks: Double

    func since(_ earlier: CPUTime) -> CPUTime {
        CPUTime(nanoseconds: nanoseconds - earlier.nanoseconds, userTicks: userTicks - earlier.userTicks,
                systemTicks: systemTicks - earlier.systemTicks)
    }

    /// `proxy_cpu_us_per_NAME` and the user share of it in per cent, for JSON.
    func perOperation(_ operations: Int, name: String) -> [String: String] {
        guard operations > 0 else { return [:] }
        let ticks = userTicks + systemTicks
        let micros = nanoseconds / 1000 / Double(operations)
        var result = ["proxy_cpu_us_per_\(name)": format(micros)]
        if ticks > 0 {
            result["proxy_user_share"] = format(userTicks / ticks * 100)
        }
        return result
    }
}

func cpuTime(of pid: Int32) -> CPUTime? {
    guard let stat = readProc("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    guard let directory = opendir("/proc/\(pid)/task") else { return nil }
    defer { closedir(directory) }
    var nanoseconds = 0.0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        guard name.first?.isNumber == true, let schedstat = readProc("/proc/\(pid)/task/\(name)/schedstat"),
              let first = schedstat.split(separator: " ").first, let value = Double(first) else { continue }
        nanoseconds += value
    }
    return CPUTime(nanoseconds: nanoseconds, userTicks: user, systemTicks: system)
}

/// RSS and PSS of a process in KiB (from /proc).
func memory(of pid: Int32) -> (rss: Int, pss: Int)? {
    guard let text = readProc("/proc/\(pid)/smaps_rollup") else { return nil }
    var rss = 0, pss = 0
    for line in text.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 2, let value = Int(fields[1]) else { continue }
        if fields[0] == "Rss:" { rss = value }
        if fields[0] == "Pss:" { pss = value }
    }
    return (rss, pss)
}

func readProc(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
