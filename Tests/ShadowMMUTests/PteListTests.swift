import DirtyLogCore
import Testing
@testable import ShadowMMU

/// The rmap's tagged encoding with 1, 4, 5 and many sptes per gfn.
@Suite struct PteListTests {
    /// A scratch table of sptes to point rmaps at, and a pool for descriptors.
    final class Fixture {
        let arena = JemallocArena.model
        let table: UnsafeMutablePointer<UInt64>
        let pool: PteListDescPool
        var head: UInt = 0

        init() {
            table = arena.allocate(UInt64.self, count: 512, alignment: 4096)
            pool = PteListDescPool(arena: arena)
        }
        deinit { arena.free(table) }

        func add(_ n: Int) {
            for i in 0..<n { withUnsafeMutablePointer(to: &head) { _ = PteList.add(table + i, to: $0, pool: pool) } }
        }
        func remove(_ i: Int) -> Bool {
            withUnsafeMutablePointer(to: &head) { PteList.remove(table + i, from: $0, pool: pool) }
        }
        var listed: [Int] {
            var out: [Int] = []
            var it = RmapIterator(head)
            while let p = it.next() { out.append(p - table) }
            return out
        }
    }

    @Test func emptyListHasNoEntries() {
        let f = Fixture()
        #expect(f.head == 0)
        #expect(f.listed.isEmpty)
        #expect(PteList.count(f.head) == 0)
    }

    @Test func oneSpteIsStoredDirectly() {
        let f = Fixture()
        f.add(1)
        #expect(f.head == UInt(bitPattern: f.table))
        #expect(f.head & 1 == 0)
        #expect(f.listed == [0])
        #expect(f.pool.inUse == 0)
    }

    @Test func fourSptesFillOneDescriptor() {
        let f = Fixture()
        f.add(4)
        #expect(f.head & 1 == 1)
        let desc = UnsafeMutablePointer<UInt>(bitPattern: f.head & ~1)!
        #expect((0..<4).map { desc[$0] } == (0..<4).map { UInt(bitPattern: f.table + $0) })
        #expect(desc[PteList.entriesPerDesc] == 0, "no second descriptor")
        #expect(f.listed == [0, 1, 2, 3])
        #expect(f.pool.inUse == 1)
    }

    @Test func fifthSpteChainsASecondDescriptor() {
        let f = Fixture()
        f.add(5)
        let first = UnsafeMutablePointer<UInt>(bitPattern: f.head & ~1)!
        let second = UnsafeMutablePointer<UInt>(bitPattern: first[PteList.entriesPerDesc])!
        #expect(second[0] == UInt(bitPattern: f.table + 4))
        #expect(second[1] == 0)
        #expect(f.listed == [0, 1, 2, 3, 4])
        #expect(f.pool.inUse == 2)
    }

    @Test func manySptesKeepInsertionOrder() {
        let f = Fixture()
        f.add(37)
        #expect(f.listed == Array(0..<37))
        #expect(PteList.count(f.head) == 37)
        #expect(f.pool.inUse == 10)
    }

    @Test func removingMovesTheDescriptorsLastEntryIntoTheHole() {
        let f = Fixture()
        f.add(4)
        #expect(f.remove(1))
        #expect(f.listed == [0, 3, 2])
        #expect(!f.remove(1), "already gone")
        #expect(f.remove(0) && f.remove(2) && f.remove(3))
        #expect(f.head == 0)
        #expect(f.pool.inUse == 0, "the emptied descriptor is freed")
    }

    @Test func removingEmptiesAMiddleDescriptorAndUnlinksIt() {
        let f = Fixture()
        f.add(9)  // descriptors: [0..3] [4..7] [8]
        for i in 4..<8 { #expect(f.remove(i)) }
        #expect(Set(f.listed) == [0, 1, 2, 3, 8])
        #expect(f.pool.inUse == 2)
        for i in [0, 1, 2, 3] { #expect(f.remove(i)) }
        #expect(f.listed == [8])
        #expect(f.head & 1 == 1, "as in the kernel, the list stays in descriptor form")
    }

    @Test func removingTheOnlyDirectSpteClearsTheHead() {
        let f = Fixture()
        f.add(1)
        #expect(!f.remove(3))
        #expect(f.remove(0))
        #expect(f.head == 0)
    }
}
