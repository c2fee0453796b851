// swift-tools-version:6.0
import PackageDescription

// One set of compiler settings for every Swift target (swift-log does the same):
// Swift 6 language mode with complete concurrency checking is the tools-version
// default; these add the upcoming features we rely on.
var swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]
// CI (STRICT=1 scripts/test) treats warnings in our own targets as errors;
// dependencies keep their warnings.
if Context.environment["PSEUDO_STRICT"] == "1" {
    swiftSettings.append(.unsafeFlags(["-warnings-as-errors"]))
}

let package = Package(
    name: "pseudonymizer",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ingest", targets: ["ingest"]),
        .executable(name: "vault", targets: ["vault"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        // Tests only: an independent HPKE (RFC 9180) to check the data-key wraps against.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
        ),
        // Process settings Swift cannot reach: prctl (variadic), mallopt's M_MMAP_THRESHOLD (a malloc.h macro).
        .target(name: "CProcess"),
        .target(name: "VaultCrypto", dependencies: ["CLibCrypto"]),
        .target(
            name: "Postgres",
            dependencies: ["CLibPQ", .product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "Pseudonymization", dependencies: ["VaultCrypto"]),
        // Seeded hostile message bodies for the fuzz test and `bench fuzz`.
        .target(name: "HostileInput"),
        .target(
            name: "AWS",
            dependencies: [
                "VaultCrypto",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Where keys live: tokens from local or AWS KMS keys (with a cache), KMS-sealed recovery keys.
        .target(
            name: "KeyCustody",
            dependencies: [
                "AWS", "Pseudonymization", "VaultCrypto", .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .target(name: "Storage", dependencies: ["AWS", "KeyCustody", "Postgres", "Pseudonymization", "VaultCrypto"]),
        .target(
            name: "Ingest",
            dependencies: [
                "CProcess", "VaultCrypto", "Postgres", "Pseudonymization", "AWS", "KeyCustody", "Storage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "CLISupport",
            dependencies: [
                "CProcess", "VaultCrypto", "Postgres", "AWS", "Storage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .target(name: "VaultAdmin", dependencies: ["AWS", "KeyCustody", "VaultCrypto", "Postgres", "Pseudonymization", "Storage"]),
        // Helpers for integration tests: throwaway databases, the AWS CLI, key sets, built binaries.
        .target(
            name: "TestSupport",
            dependencies: [
                "AWS", "KeyCustody", "Postgres", "VaultCrypto", "Storage", "VaultAdmin",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Tests/TestSupport"),
        .executableTarget(
            name: "ingest",
            dependencies: [
                "VaultCrypto", "Postgres", "Ingest", "CLISupport", "AWS", "Storage",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "vault",
            dependencies: [
                "VaultCrypto", "Postgres", "VaultAdmin", "CLISupport", "KeyCustody",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "bench",
            dependencies: [
                "VaultCrypto", "Postgres", "Pseudonymization", "AWS", "HostileInput",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "VaultCryptoTests",
            dependencies: ["VaultCrypto"],
            resources: [.copy("Vectors")]
        ),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"]),
        .testTarget(name: "PseudonymizationTests", dependencies: ["Pseudonymization", "VaultCrypto", "HostileInput"]),
        .testTarget(
            name: "AWSTests",
            dependencies: ["AWS", "VaultCrypto", "TestSupport", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(name: "KeyCustodyTests", dependencies: ["KeyCustody", "Pseudonymization", "VaultCrypto", "TestSupport"]),
        .testTarget(
            name: "VaultAdminTests",
            dependencies: [
                "VaultAdmin", "Ingest", "Pseudonymization", "Storage", "Postgres", "VaultCrypto", "TestSupport", "AWS", "KeyCustody",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "IngestTests",
            dependencies: [
                "Ingest", "Pseudonymization", "Storage", "AWS", "Postgres", "VaultCrypto", "VaultAdmin", "TestSupport", "HostileInput",
            ]
        ),
    ]
)

for target in package.targets where target.type != .system && target.name != "CProcess" {
    target.swiftSettings = (target.swiftSettings ?? []) + swiftSettings
}
