import Testing
@testable import BenchKit

@Suite struct ParseTests {
    func usageMessage(_ body: () throws -> Void) -> String? {
        do { try body() } catch let e as BenchError {
            if case .usage(let m) = e { return m }
        } catch {}
        return nil
    }

    @Test func pagesAcceptCountsAndBinarySizes() throws {
        let r = RunOptions.Limits.slotPages
        #expect(try Parse.pages("262144", option: "--slot-pages", range: r) == 262_144)
        #expect(try Parse.pages("1GiB", option: "--slot-pages", range: r) == 262_144)
        #expect(try Parse.pages("16G", option: "--slot-pages", range: r) == 4_194_304)
        #expect(try Parse.pages("64mib", option: "--slot-pages", range: r) == 16384)
        #expect(try Parse.pages("4KiB", option: "--slot-pages", range: r) == 1)
    }

    @Test(arguments: ["0", "-5", "abc", "1.5GiB", "6KiB", "2TiB", "", "99999999999999999999"])
    func badPageCountsNameTheOptionAndTheRange(text: String) {
        let m = usageMessage { _ = try Parse.pages(text, option: "--slot-pages", range: RunOptions.Limits.slotPages) }
        #expect(m != nil)
        #expect(m?.hasPrefix("--slot-pages:") == true)
        #expect(m?.contains("accepted: 1 to 268435456 pages") == true)
        #expect(m?.contains("\n") == false)
    }

    @Test func optionsAreCheckedBeforeAnythingRuns() {
        func planError(_ configure: (inout RunOptions) -> Void) -> String? {
            var o = RunOptions()
            configure(&o)
            return usageMessage { _ = try o.plan(memoryAvailable: 1 << 40) }
        }
        #expect(planError { $0.reps = "0" } == "--reps: 0 is out of range; accepted: 1 to 1000")
        #expect(planError { $0.reps = "many" } == "--reps: 'many' is not a whole number; accepted: 1 to 1000")
        #expect(planError { $0.strategy = "rmap,fast" } == "--strategy: unknown value 'fast'; accepted: "
            + "slot-walk, rmap, seed, masked, rmap-walk, tdp-walk, tdp-masked, dbit-clear, clear-chunked, ring, adaptive")
        #expect(planError { $0.pattern = "zipf" }?.hasPrefix("--pattern: unknown value 'zipf'") == true)
        #expect(planError { $0.paging = "ept" } == "--paging: unknown paging mode 'ept'; accepted: tdp, shadow")
        #expect(planError { $0.slotPages = "1GiB"; $0.dirty = "1,262145" }
            == "--dirty: 262145 is out of range; accepted: 1 to 262144 dirty pages (at most the slot's 262144 pages)")
        #expect(planError { $0.slotPages = "1GiB"; $0.vmPages = "512MiB" }?.hasPrefix("--vm-pages: 131072 pages is smaller than the slot") == true)
        #expect(planError { $0.mappings = "17" } == "--mappings: 17 is out of range; accepted: 1 to 16")
        #expect(planError { $0.cache = "lukewarm" } == "--cache: unknown value 'lukewarm'; accepted: cold, warm")
        #expect(planError { $0.slotPages = "1GiB,,2GiB" }?.hasPrefix("--slot-pages: empty value") == true)
        #expect(planError { $0.output = "" } != nil)
    }

    @Test func aConfigurationLargerThanMemoryIsRefused() {
        var o = RunOptions()
        o.slotPages = "1TiB"
        o.paging = "shadow"
        o.mappings = "4"
        var message: String?
        do { _ = try o.plan(memoryAvailable: 24 << 30) } catch let e as BenchError {
            if case .usage(let m) = e { message = m }
            #expect(e.exitStatus == 64)
        } catch {}
        #expect(message?.hasPrefix("--slot-pages: a 1TiB VM under shadow(4 mappings) needs about") == true)
        #expect(message?.hasSuffix("this machine has 24GiB available") == true)
    }

    @Test func theDefaultRunIsTheCuratedSet() throws {
        let plan = try RunOptions().plan(memoryAvailable: 1 << 40)
        let labels = plan.modelSeries.map(\.key.label)
        #expect(labels == [
            "threshold 1GiB tdp even", "threshold 1GiB tdp random",
            "threshold 1GiB shadow×2 even", "threshold 1GiB shadow×2 random",
            "threshold 16GiB tdp even", "threshold 16GiB shadow×2 even",
            "migration 1GiB tdp hot-set", "migration 1GiB shadow×2 hot-set",
        ])
        #expect(plan.settings.reps == 11)
        #expect(plan.settings.cache == .cold)
    }

    @Test func quickIsSmall() throws {
        var o = RunOptions()
        o.quick = true
        let plan = try o.plan(memoryAvailable: 1 << 40)
        #expect(plan.modelSeries.allSatisfy { $0.layout.slotPages == 16384 && $0.pattern == .even })
        #expect(plan.modelSeries.map(\.layout.paging) == [.tdp, .shadow(mappings: 2)])
        #expect(plan.settings.reps == 5)
    }
}
