import DirtyLogCore

/// The kernel's kvm-get at the fewest and the most dirty pages it measured,
/// and how the model's closest strategy compares there.
public struct KernelComparison: Sendable {
    public var guestMode: String
    public var minDirtyPages: Int
    public var maxDirtyPages: Int
    public var kvmGetAtMin: Double
    public var kvmGetAtMax: Double
    /// The model strategy compared: the one that works as the kernel's
    /// KVM_GET_DIRTY_LOG does.
    public var modelStrategy: Strategy
    /// Model median over kernel median at those two counts (nil when the
    /// model did not measure that count).
    public var modelOverKernelAtMin: Double?
    public var modelOverKernelAtMax: Double?
}

extension Crossover {
    /// kvm-get at the fewest and the most dirty pages the kernel measured,
    /// and the model's counterpart there.
    static func kernelComparison(_ rows: [PointRow]) -> KernelComparison? {
        let get = rows.filter { $0.strategy == .kernel(.get) }.sorted { $0.dirtyPages < $1.dirtyPages }
        guard let lo = get.first, let hi = get.last else { return nil }
        let model = Dictionary(rows.filter { $0.strategy == .model(Strategy.counterpartOfKernelGet) }
            .map { ($0.dirtyPages, $0.summary.median) }, uniquingKeysWith: { a, _ in a })
        return KernelComparison(
            guestMode: lo.kernel?.guestMode ?? "", minDirtyPages: lo.dirtyPages, maxDirtyPages: hi.dirtyPages,
            kvmGetAtMin: lo.summary.median, kvmGetAtMax: hi.summary.median, modelStrategy: Strategy.counterpartOfKernelGet,
            modelOverKernelAtMin: model[lo.dirtyPages].map { $0 / lo.summary.median },
            modelOverKernelAtMax: model[hi.dirtyPages].map { $0 / hi.summary.median })
    }
}
