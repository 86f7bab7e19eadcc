import DirtyLogCore

extension Strategy {
    /// What the slot's leaves keep cleared between harvests: the writable
    /// bit, or with PML (dbit-clear) the dirty bit.
    public var protection: Protection { self == .dbitClear ? .dirtyBit : .writeProtect }
}
