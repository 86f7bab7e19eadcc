import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// What each phase of a lifecycle must leave: the leaves the policy implies.
extension LifecycleRun {
    func setAll(_ bitmap: UnsafeMutablePointer<UInt64>) {
        bitmap.update(repeating: ~0, count: slot.bitmapWords)
        if slot.npages & 63 != 0 { bitmap[slot.bitmapWords - 1] = (1 << UInt64(slot.npages & 63)) - 1 }
    }

    /// Every region the host maps huge is mapped by one huge leaf.
    static func expectHuge(_ r: LifecycleRow, _ when: String) -> [String] {
        r.hugeRegions == r.eligibleRegions ? [] : ["after \(when), \(r.hugeRegions) of \(r.eligibleRegions) huge regions mapped huge (\(r.splitRegions) split)"]
    }

    /// What enabling under the policy leaves: the seed drops every large
    /// leaf; wrprot keeps them, read-only; eager-split maps every region
    /// at 4 KiB; split-on-clear changes nothing. Nothing writable but in
    /// initially-set mode.
    func enableRule(_ r: LifecycleRow) -> [String] {
        var out: [String] = []
        let census = vm.leafCensus(slotID: VMLayout.measuredSlotID)
        let writable = census.writable.pages4K + census.writable.pages2M + census.writable.pages1G
        switch policy {
        case .drop:
            if r.hugeRegions != 0 { out.append("drop left \(r.hugeRegions) huge regions mapped") }
        case .wrprot:
            if r.hugeRegions != r.eligibleRegions { out.append("wrprot kept \(r.hugeRegions) of \(r.eligibleRegions) huge regions") }
        case .eagerSplit:
            if r.hugeRegions != 0 || r.splitRegions != r.eligibleRegions {
                out.append("eager-split left \(r.hugeRegions) huge and \(r.splitRegions) split of \(r.eligibleRegions) regions")
            }
        case .splitOnClear:
            if r.hugeRegions != r.eligibleRegions { out.append("split-on-clear changed \(r.eligibleRegions - r.hugeRegions) huge regions at enable") }
        }
        if !policy.initiallySet && writable != 0 { out.append("\(writable) leaves writable after enable (\(census.writable))") }
        return out
    }

    /// What disabling leaves before the next pass: no region split (each
    /// zapped, recovered, or mapped huge again by a running vCPU), but
    /// 3.3's walk, which keeps the 4 KiB leaves, write-protected, until a
    /// write maps the region huge.
    func disableRule(_ r: LifecycleRow, _ d: DisablePolicy) -> [String] {
        if d == .wrprotWalk {
            let census = vm.leafCensus(slotID: VMLayout.measuredSlotID)
            return census.writable.pages4K == 0 ? [] : ["\(census.writable.pages4K) 4 KiB leaves writable after 3.3's walk"]
        }
        var out: [String] = []
        if r.splitRegions != 0 { out.append("\(d.rawValue) left \(r.splitRegions) of \(r.eligibleRegions) huge regions split") }
        if d == .recover && !spec.vcpusRunDuringDisable && r.hugeRegions != r.eligibleRegions {
            out.append("recover mapped \(r.hugeRegions) of \(r.eligibleRegions) regions huge")
        }
        return out
    }
}
