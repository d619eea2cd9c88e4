// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "IMAPWire", targets: ["IMAPWire"]),
        .library(name: "SluiceFilters", targets: ["SluiceFilters"]),
        .library(name: "SluiceProxy", targets: ["SluiceProxy"]),
        .library(name: "SluiceConfig", targets: ["SluiceConfig"]),
        .library(name: "SluiceLua", targets: ["SluiceLua"]),
        .executable(name: "sluice", targets: ["sluice"]),
        .executable(name: "imapwire-bench", targets: ["imapwire-bench"]),
        .executable(name: "sluice-bench", targets: ["sluice-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // Framing, lazy parsing, typed views, encoding, mailbox names, limits.
        // Depends on NIOCore (ByteBuffer) only.
        .target(
            name: "IMAPWire",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        // The filter engine (command and response chains, session context)
        // and the built-in rules.
        .target(
            name: "SluiceFilters",
            dependencies: [
                "IMAPWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // Listeners, TLS, pre-auth, routing, upstream login and the relay.
        .target(
            name: "SluiceProxy",
            dependencies: [
                "IMAPWire",
                "SluiceFilters",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Lua 5.4 from the system (Debian: liblua5.4-dev), found with pkg-config.
        .systemLibrary(
            name: "CLua",
            pkgConfig: "lua5.4",
            providers: [.apt(["liblua5.4-dev"])]
        ),
        // The sandbox around a lua_State, in C: Lua reports errors with
        // longjmp, which must only cross C frames (docs/lua.md).
        .target(name: "CSluiceLua", dependencies: ["CLua"]),
        // `lua:` rules: scripts as filters, one sandboxed state per script per
        // event-loop thread. Apart from SluiceFilters, so that embedding the
        // engine does not bring in Lua.
        .target(
            name: "SluiceLua",
            dependencies: [
                "IMAPWire", "SluiceFilters", "CLua", "CSluiceLua",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // Routing through an HTTP auth service that speaks nginx's auth_http
        // protocol (docs/configuration.md, routing.http). Apart from the
        // proxy, so that embedding it does not bring in the HTTP client.
        .target(
            name: "SluiceAuthHTTP",
            dependencies: [
                "SluiceProxy", "IMAPWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The YAML configuration file, the routing map and each rule's reader:
        // apart from the proxy, so that embedding it does not bring in Yams.
        .target(
            name: "SluiceConfig",
            dependencies: [
                "IMAPWire", "SluiceFilters", "SluiceProxy", "SluiceLua", "SluiceAuthHTTP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "IMAPWire",
                "SluiceFilters",
                "SluiceProxy",
                "SluiceConfig",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Micro-benchmark of the framer (not a test; see docs/performance.md).
        .executableTarget(
            name: "imapwire-bench",
            dependencies: ["IMAPWire", "CAllocationCounter", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // Load generator: the side-by-side benchmark (scripts/bench-compare).
        .executableTarget(
            name: "sluice-bench",
            dependencies: [
                "IMAPWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Counts heap allocations for imapwire-bench (glibc); never linked into the proxy.
        .target(name: "CAllocationCounter"),
        // libFuzzer entry point; see docs/fuzzing.md. Built normally it is a
        // reproducer that runs the fuzz function over files given as arguments.
        .executableTarget(
            name: "imapwire-fuzz",
            dependencies: [
                "IMAPWire", "SluiceFilters",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The custom filter of docs/filters.md, and a sluice of one's own with it.
        .target(
            name: "ExampleFilters",
            dependencies: ["SluiceFilters", "IMAPWire"],
            path: "Examples/ExampleFilters"
        ),
        .executableTarget(
            name: "sluice-with-filters",
            dependencies: [
                "ExampleFilters", "SluiceFilters", "SluiceProxy", "SluiceConfig",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Examples/sluice-with-filters"
        ),
        .testTarget(
            name: "SluiceProxyTests",
            dependencies: ["SluiceProxy", "SluiceConfig", "SluiceAuthHTTP", "SluiceFilters", "ExampleFilters", "IMAPWire",
                           .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "SluiceFiltersTests",
            dependencies: ["SluiceFilters", "IMAPWire", .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "SluiceLuaTests",
            dependencies: ["SluiceLua", "CLua", "SluiceFilters", "IMAPWire", .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "IMAPWireTests",
            dependencies: ["IMAPWire", .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["Transcripts"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
