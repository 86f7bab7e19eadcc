// swift-tools-version:6.0
import PackageDescription

/// Hot loops run on unsafe buffers hoisted into locals; exclusivity checks
/// there are dynamic calls the model does not want to time.
let hotLoopSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"]),
]

let package = Package(
    name: "dirty-log-bench",
    products: [
        .executable(name: "bench", targets: ["bench"]),
        .library(name: "ShadowMMU", targets: ["ShadowMMU"]),
        .library(name: "BenchKit", targets: ["BenchKit"]),
        .library(name: "HostKVM", targets: ["HostKVM"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // jemalloc from Debian's libjemalloc-dev, plus static inline shims for its macros.
        .systemLibrary(
            name: "CJemalloc",
            pkgConfig: "jemalloc",
            providers: [.apt(["libjemalloc-dev"])]
        ),
        // jemalloc's options for the process (malloc_conf): transparent huge pages.
        .target(name: "CJemallocConfig"),
        // Kernel-style atomics (xchg, test-and-set spinlock, cpu_relax) as static inline C.
        .target(name: "CAtomics"),
        // <linux/kvm.h> structs and the ioctl request numbers its macros compute.
        .target(name: "CLinuxKVM"),
        .target(
            name: "ShadowMMU",
            dependencies: ["CJemalloc", "CJemallocConfig", "CAtomics"],
            swiftSettings: hotLoopSettings
        ),
        .target(
            name: "HostKVM",
            dependencies: ["CLinuxKVM"]
        ),
        .target(
            name: "BenchKit",
            dependencies: ["ShadowMMU", "HostKVM", "CJemalloc"],
            swiftSettings: hotLoopSettings
        ),
        .executableTarget(
            name: "bench",
            dependencies: [
                "BenchKit",
                "ShadowMMU",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/bench"
        ),
        .testTarget(name: "ShadowMMUTests", dependencies: ["ShadowMMU"]),
        .testTarget(name: "BenchKitTests", dependencies: ["BenchKit", "HostKVM"]),
        .testTarget(name: "HostKVMTests", dependencies: ["HostKVM"]),
        // Runs the built `bench` executable: exit statuses and one-line errors.
        .testTarget(name: "BenchCLITests", dependencies: ["bench"]),
    ]
)
