import CAllocationCounter
import IMAPWire
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Micro-benchmark of the IMAPWire framer: frames recorded-like server
/// traffic held in memory, fed in 64 KiB reads as a socket would deliver it,
/// extracting each frame's tag and name, and reports MB/s and heap
/// allocations per frame. One core; run a release build:
///
///     swift run -c release imapwire-bench [--iterations N] [FILE --from client|server]
@main
struct FramerBenchmark {
    struct Workload {
        var name: String
        var peer: IMAPPeer
        var bytes: [UInt8]
    }

    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        var iterations = 5
        if let index = arguments.firstIndex(of: "--iterations"), index + 1 < arguments.count {
            iterations = Int(arguments[index + 1]) ?? 5
            arguments.removeSubrange(index...(index + 1))
        }
        let workloads: [Workload]
        if let file = arguments.first {
            let peer: IMAPPeer = arguments.contains("client") ? .client : .server
            workloads = [Workload(name: "file \(file)", peer: peer, bytes: readFile(file))]
        } else {
            workloads = [literalHeavy(), lineHeavy(), mixedSync()]
        }
        print("| workload | bytes | frames | MB/s (best of \(iterations)) | MB/s (median) | allocations/frame |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for workload in workloads {
            measure(workload, iterations: iterations)
        }
    }

    static func measure(_ workload: Workload, iterations: Int) {
        let input = ByteBuffer(bytes: workload.bytes)
        var rates: [Double] = []
        var frames = 0
        var allocationsPerFrame = 0.0
        for _ in 0..<iterations {
            let allocationsBefore = sluice_allocation_count()
            let start = now()
            frames = frame(input, peer: workload.peer)
            let seconds = now() - start
            let allocations = sluice_allocation_count() - allocationsBefore
            allocationsPerFrame = Double(allocations) / Double(max(frames, 1))
            rates.append(Double(workload.bytes.count) / seconds / 1_000_000)
        }
        rates.sort()
        let allocationText = sluice_allocation_count() < 0 ? "n/a" : format(allocationsPerFrame)
        print("| \(workload.name) | \(workload.bytes.count) | \(frames) | \(format(rates.last ?? 0)) | \(format(rates[rates.count / 2])) | \(allocationText) |")
    }

    /// Frames `input` in 64 KiB reads; per frame, reads its tag and name as a
    /// proxy's relay would. Returns the number of frames.
    @inline(never)
    static func frame(_ input: ByteBuffer, peer: IMAPPeer) -> Int {
        var framer = IMAPFramer(peer: peer)
        var source = input
        var buffer = ByteBufferAllocator().buffer(capacity: 128 * 1024)
        var frames = 0
        var namedBytes = 0
        do {
            while source.readableBytes > 0 {
                var chunk = source.readSlice(length: min(65536, source.readableBytes)) ?? ByteBuffer()
                buffer.writeBuffer(&chunk)
                while let event = try framer.next(&buffer) {
                    if case .line(let line) = event, line.isFrameStart {
                        // The tag and name, as the framer located them in its scan.
                        frames += 1
                        namedBytes &+= (line.firstSpace ?? 0) &+ (line.secondSpace ?? 0)
                    }
                }
                buffer.discardReadBytes()
            }
        } catch {
            print("framing error: \(error)")
            exit(1)
        }
        if namedBytes == -1 { print("") }
        return frames
    }

    // MARK: - Workloads

    /// A sync's bodies: BODY[] literals of 10 KB, 1 MB and 50 MB.
    static func literalHeavy() -> Workload {
        var out: [UInt8] = []
        var number = 0
        func body(_ size: Int) {
            number += 1
            out += Array("* \(number) FETCH (UID \(number) BODY[] {\(size)}\r\n".utf8)
            out += [UInt8](repeating: UInt8(ascii: "x"), count: size)
            out += Array(")\r\n".utf8)
        }
        for _ in 0..<100 { body(10 * 1024) }
        for _ in 0..<20 { body(1024 * 1024) }
        body(50 * 1024 * 1024)
        out += Array("a1 OK Fetch completed.\r\n".utf8)
        return Workload(name: "literal-heavy (100×10 KB, 20×1 MB, 1×50 MB)", peer: .server, bytes: out)
    }

    /// Flag and UID lines, as `UID FETCH 1:* (UID FLAGS)` returns them.
    static func lineHeavy() -> Workload {
        var out: [UInt8] = []
        for number in 1...200_000 {
            let flags = number % 3 == 0 ? "\\Seen \\Flagged" : (number % 3 == 1 ? "\\Seen" : "")
            out += Array("* \(number) FETCH (UID \(number + 1000) FLAGS (\(flags)))\r\n".utf8)
        }
        out += Array("a2 OK Fetch completed.\r\n".utf8)
        return Workload(name: "line-heavy (200k FLAGS lines)", peer: .server, bytes: out)
    }

    /// A mixed sync: a header literal and a small body per message.
    static func mixedSync() -> Workload {
        var out: [UInt8] = []
        let header = [UInt8](repeating: UInt8(ascii: "h"), count: 700)
        let body = [UInt8](repeating: UInt8(ascii: "b"), count: 4000)
        for number in 1...20_000 {
            out += Array("* \(number) FETCH (UID \(number) FLAGS (\\Seen) RFC822.SIZE 4700 BODY[HEADER] {700}\r\n".utf8)
            out += header
            out += Array(" BODY[TEXT] {4000}\r\n".utf8)
            out += body
            out += Array(")\r\n".utf8)
        }
        return Workload(name: "mixed sync (20k × header+text literals)", peer: .server, bytes: out)
    }

    static func readFile(_ path: String) -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            print("cannot open \(path)")
            exit(1)
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return bytes
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func format(_ value: Double) -> String {
        let rounded = (value * 10).rounded() / 10
        return String(rounded)
    }
}
