// swift-tools-version:6.0
import PackageDescription

// One module per concern; see docs/ARCHITECTURE.md. The C libraries come from Debian's
// -dev packages through pkg-config and are only ever touched by their Swift wrapper module.
let package = Package(
    name: "ciphertail",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ciphertail", targets: ["ciphertail"]),
        .executable(name: "ciphertail-bench", targets: ["CiphertailBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // C libraries (system library targets).
        .systemLibrary(name: "CBSON", path: "Sources/C/CBSON", pkgConfig: "libbson-1.0",
                       providers: [.apt(["libbson-dev"])]),
        .systemLibrary(name: "CMongoC", path: "Sources/C/CMongoC", pkgConfig: "libmongoc-1.0",
                       providers: [.apt(["libmongoc-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/C/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/C/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        // libmongocrypt.pc names a static archive that SwiftPM refuses, so no pkgConfig here.
        .systemLibrary(name: "CMongoCrypt", path: "Sources/C/CMongoCrypt",
                       providers: [.apt(["libmongocrypt-dev"])]),

        // Swift layers that own the C libraries' memory.
        .target(name: "BSON", dependencies: ["CBSON"]),
        .target(name: "Mongo", dependencies: ["BSON", "CMongoC", "CBSON"]),
        .target(name: "Zstd", dependencies: ["CZstd"]),
        .target(name: "Digest", dependencies: ["COpenSSL"]),
        .target(name: "FieldCrypto", dependencies: [
            "BSON", "CMongoCrypt", "CBSON", "Durable", "Digest", "Mongo", "KMIP", "KMIPClient",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // KMIP over mutual TLS (OpenSSL): options, connections with failover, message framing,
        // and the operations on top of the codec.
        .target(name: "KMIPClient", dependencies: [
            "COpenSSL", "KMIP", .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
        ]),

        // Domain modules.
        .target(name: "Durable"),
        .target(name: "Archive", dependencies: ["BSON", "Zstd", "Digest", "Durable"]),
        .target(name: "Pipeline", dependencies: [
            "Yams", "BSON", "FieldCrypto", "KMIPClient", "Mongo", "Durable", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Capture", dependencies: [
            "BSON", "Mongo", "Archive", "Digest", "Durable", "FieldCrypto", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Restore", dependencies: [
            "BSON", "Mongo", "Archive", "FieldCrypto", .product(name: "Logging", package: "swift-log"),
        ]),
        // KMIP 1.x messages (TTLV codec, requests, responses); pure Swift, no networking.
        .target(name: "KMIP"),
        // Writes a backup as a mongodump archive, with the change events replayed in memory.
        .target(name: "Export", dependencies: [
            "BSON", "Archive", "Durable", "FieldCrypto", .product(name: "Logging", package: "swift-log"),
        ]),

        .target(name: "Erasure", dependencies: [
            "BSON", "Mongo", "Archive", "Digest", "Durable", "FieldCrypto", "KMIP", "KMIPClient", "Zstd", .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ]),

        // Applies a repository's (encrypted) change log to another cluster, as it grows.
        .target(name: "Replication", dependencies: [
            "BSON", "Mongo", "Archive", "Restore", "Digest", "Durable", .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ]),
        // The Prometheus registry and its HTTP endpoint (/metrics, /healthz), log output formats.
        .target(name: "Observability", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // `ciphertail run`: the long-running services of one pipeline (capture, schedule,
        // retention, replication, lease) under swift-service-lifecycle.
        .target(name: "Sidecar", dependencies: [
            "BSON", "Mongo", "Archive", "Capture", "Pipeline", "Durable", "FieldCrypto", "Replication", "Observability",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),

        // Thin CLI and the benchmark.
        .executableTarget(name: "ciphertail", dependencies: [
            "BSON", "Mongo", "Archive", "Capture", "Restore", "Export", "Pipeline", "Durable", "FieldCrypto", "Erasure",
            "Replication", "Observability", "Sidecar",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "CiphertailBench", dependencies: [
            "BSON", "Mongo", "Archive", "Zstd", "FieldCrypto", "COpenSSL", "KMIPClient", "Pipeline", "Erasure",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Tests: pure modules alone, the rest against the real mongod (docs/ARCHITECTURE.md, Tests).
        .target(name: "TestSupport", dependencies: ["BSON", "Mongo"], path: "Tests/TestSupport"),
        .testTarget(name: "BSONTests", dependencies: ["BSON"]),
        .testTarget(name: "ArchiveTests", dependencies: ["Archive", "BSON", "Zstd", "Digest"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline", .product(name: "Yams", package: "Yams")]),
        .testTarget(name: "SidecarTests", dependencies: ["Sidecar", "Archive", "Pipeline", "BSON"]),
        .testTarget(name: "ObservabilityTests", dependencies: ["TestSupport", 
            "Observability", "KMIP", "KMIPClient", "Erasure", "FieldCrypto", "BSON",
            .product(name: "Metrics", package: "swift-metrics"), .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .testTarget(name: "FieldCryptoTests", dependencies: ["FieldCrypto", "BSON", "COpenSSL", "Digest", "Mongo"]),
        .testTarget(name: "KMIPTests", dependencies: ["KMIP"]),
        .testTarget(name: "ErasureTests", dependencies: ["Erasure", "FieldCrypto", "BSON", "Digest"]),
        .testTarget(name: "ExportTests", dependencies: ["Export", "Archive", "BSON", .product(name: "Logging", package: "swift-log")]),
        // Against real PyKMIP servers (ops/kmip.sh) and misbehaving ones (Tests/interop/kmip_test_server.py).
        .testTarget(name: "KMIPClientTests", dependencies: [
            "KMIPClient", "KMIP", "TestSupport", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "IntegrationTests", dependencies: [
            "BSON", "Mongo", "Archive", "Capture", "Restore", "Export", "Pipeline", "TestSupport", "FieldCrypto", "Durable", "KMIP", "KMIPClient", "Erasure", "Replication",
            .product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
