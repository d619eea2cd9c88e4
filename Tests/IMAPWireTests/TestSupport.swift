import IMAPWire
import NIOCore

/// A deterministic random source (SplitMix64), so random splits are reproducible.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// How input is cut into reads.
enum Split: CustomStringConvertible, Sendable {
    case whole
    case bytewise
    case random(seed: UInt64)
    case at([Int])

    var description: String {
        switch self {
        case .whole: return "whole"
        case .bytewise: return "bytewise"
        case .random(let seed): return "random(\(seed))"
        case .at(let points): return "at\(points)"
        }
    }

    func chunks(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        switch self {
        case .whole:
            return [bytes[...]]
        case .bytewise:
            return bytes.indices.map { bytes[$0...$0] }
        case .random(let seed):
            var generator = SeededGenerator(seed: seed)
            var result: [ArraySlice<UInt8>] = []
            var start = 0
            while start < bytes.count {
                let length = Int.random(in: 1...max(1, min(64, bytes.count - start)), using: &generator)
                result.append(bytes[start..<(start + length)])
                start += length
            }
            return result
        case .at(let points):
            var result: [ArraySlice<UInt8>] = []
            var start = 0
            for point in points.sorted() where point > start && point < bytes.count {
                result.append(bytes[start..<point])
                start = point
            }
            result.append(bytes[start...])
            return result
        }
    }

    static let standard: [Split] = [.whole, .bytewise, .random(seed: 1), .random(seed: 2), .random(seed: 3)]
}

/// Frames `bytes`, fed in the reads `split` makes; the stream must end at a frame boundary.
func decodeFrames(
    _ bytes: [UInt8], peer: IMAPPeer, split: Split = .whole, limits: IMAPLimits? = nil,
    captureLimit: UInt64 = .max
) throws -> [Frame] {
    var decoder = IMAPFrameDecoder(peer: peer, limits: limits, literalCaptureLimit: captureLimit)
    var buffer = ByteBuffer()
    var frames: [Frame] = []
    for chunk in split.chunks(bytes) {
        buffer.writeBytes(chunk)
        while let frame = try decoder.next(&buffer) { frames.append(frame) }
        buffer.discardReadBytes()
    }
    try decoder.checkEnd(buffer)
    return frames
}

func decodeFrames(_ text: String, peer: IMAPPeer, split: Split = .whole) throws -> [Frame] {
    try decodeFrames(Array(text.utf8), peer: peer, split: split)
}

/// What a test compares about a frame.
struct FrameSummary: Equatable, CustomStringConvertible {
    var kind: FrameKind
    var tag: String?
    var name: String?
    var literals: [UInt64]
    var bytes: [UInt8]

    init(_ frame: Frame) {
        kind = frame.kind
        tag = frame.tag
        name = frame.name
        literals = frame.literals.map(\.header.size)
        bytes = frame.originalBytes().map { Array($0.readableBytesView) } ?? []
    }

    init(_ kind: FrameKind, _ tag: String?, _ name: String?, literals: [UInt64] = [], bytes: String) {
        self.kind = kind
        self.tag = tag
        self.name = name
        self.literals = literals
        self.bytes = Array(bytes.utf8)
    }

    var description: String {
        "\(kind) tag=\(tag ?? "nil") name=\(name ?? "nil") literals=\(literals) \(String(decoding: bytes, as: UTF8.self).debugDescription)"
    }
}

/// The one frame `text` holds.
func singleFrame(_ text: String, peer: IMAPPeer) throws -> Frame {
    let frames = try decodeFrames(text, peer: peer)
    guard frames.count == 1 else { throw TestFailure("expected one frame, got \(frames.count)") }
    return frames[0]
}

func command(_ text: String) throws -> ParsedCommand {
    try singleFrame(text, peer: .client).command()
}

func response(_ text: String) throws -> ParsedResponse {
    try singleFrame(text, peer: .server).response()
}

func data(_ text: String) throws -> DataResponse {
    guard case .data(let data) = try response(text) else { throw TestFailure("not a data response") }
    return data
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
