// swift-tools-version:6.0
import PackageDescription

/// Hot loops run on unsafe buffers hoisted into locals; exclusivity checks
/// there are dynamic calls the model does not want to time.
let hotLoopSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"]),
]

// The module graph:
//
//   bench ──> BenchMeasure ──> ShadowMMU (the model), HostKVM (the kernel)
//     │            └─────────> BenchAnalysis
//     └─────> BenchAnalysis ──> DirtyLogCore
//
// BenchAnalysis (statistics, crossover, regret, compare, CSV, Markdown,
// SVG) imports neither the model nor the kernel; DirtyLogCore holds the
// names they all share (strategies, gfns, the clock).
let package = Package(
    name: "dirty-log-bench",
    products: [
        .executable(name: "bench", targets: ["bench"]),
        .library(name: "ShadowMMU", targets: ["ShadowMMU"]),
        .library(name: "HostKVM", targets: ["HostKVM"]),
        .library(name: "BenchMeasure", targets: ["BenchMeasure"]),
        .library(name: "BenchAnalysis", targets: ["BenchAnalysis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
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
        // Kernel-style atomics (xchg, cmpxchg, mmu_lock as each era had it, cpu_relax, clflushopt) as static inline C.
        .target(name: "CAtomics"),
        // <linux/kvm.h> structs and the ioctl request numbers its macros compute.
        .target(name: "CLinuxKVM"),
        // The seed's two write-protection branches as plain C on the model's data: the yardstick of `bench breakdown`.
        .target(name: "CMinimalHarvest"),
        // SIGINT and SIGTERM: the first recorded for a clean stop, a second exits at once.
        .target(name: "CTermination"),
        // The names the model, the kernel backend, the measuring and the reports share.
        .target(name: "DirtyLogCore"),
        // The model of the x86 shadow MMU and its write-protection strategies.
        .target(
            name: "ShadowMMU",
            dependencies: ["DirtyLogCore", "CJemalloc", "CJemallocConfig", "CAtomics"],
            swiftSettings: hotLoopSettings
        ),
        // The real kernel through /dev/kvm.
        .target(
            name: "HostKVM",
            dependencies: ["DirtyLogCore", "CLinuxKVM", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // Statistics, crossover, regret, compare, and the files a run writes.
        .target(name: "BenchAnalysis", dependencies: ["DirtyLogCore"]),
        // Series, calibration, eviction, patterns, the sweep plan and the one timed path.
        .target(
            name: "BenchMeasure",
            dependencies: ["DirtyLogCore", "ShadowMMU", "HostKVM", "BenchAnalysis", "CJemalloc", "CAtomics", "CMinimalHarvest", "CTermination",
                           .product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: hotLoopSettings
        ),
        .executableTarget(
            name: "bench",
            dependencies: [
                "DirtyLogCore",
                "BenchMeasure",
                "BenchAnalysis",
                "ShadowMMU",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/bench"
        ),
        // What the concurrency tests share: a watchdog, threads with a deadline.
        .target(name: "TestSupport", dependencies: ["CAtomics"], path: "Tests/TestSupport"),
        .testTarget(name: "DirtyLogCoreTests", dependencies: ["DirtyLogCore"]),
        .testTarget(name: "ShadowMMUTests", dependencies: ["ShadowMMU", "DirtyLogCore", "CAtomics", "TestSupport"]),
        .testTarget(name: "HostKVMTests", dependencies: ["HostKVM", "DirtyLogCore"]),
        .testTarget(name: "BenchAnalysisTests", dependencies: ["BenchAnalysis", "DirtyLogCore"]),
        .testTarget(name: "BenchMeasureTests", dependencies: ["BenchMeasure", "BenchAnalysis", "ShadowMMU", "HostKVM", "DirtyLogCore", "TestSupport", "CAtomics"]),
        // The `bench` command: its options, exit statuses and one-line errors,
        // and whole runs of the built executable.
        .testTarget(name: "BenchCLITests", dependencies: ["bench", "BenchMeasure", "BenchAnalysis", "ShadowMMU", "DirtyLogCore"]),
    ]
)
