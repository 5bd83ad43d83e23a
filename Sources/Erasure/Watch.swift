import FieldCrypto
import Foundation
import Logging

/// Keeps a running job (tail, backup, restore) in step with the erasure ledger: once a second
/// it checks the ledger file, and when new erasures appear, the protector already refuses
/// those subjects (it asks `erased` on every key lookup) and the engine forgets every data
/// key it had unwrapped, so a destroyed key stops being used within about a second.
public final class ErasureWatch: @unchecked Sendable {
    public let erased: ErasedSet
    private let engine: MongoCryptEngine
    private let logger: Logger
    private let lock = NSLock()
    private var stopped = false
    private let interval: TimeInterval

    public init(erased: ErasedSet, engine: MongoCryptEngine, logger: Logger, interval: TimeInterval = 1) {
        self.erased = erased
        self.engine = engine
        self.logger = logger
        self.interval = interval
    }

    public func start() {
        let t = Thread { [self] in
            while !lock.withLock({ stopped }) {
                Thread.sleep(forTimeInterval: interval)
                check()
            }
        }
        t.name = "erasure-watch"
        t.start()
    }

    /// One check (the thread's loop body; tests call it directly).
    public func check() {
        do {
            if try erased.refresh() {
                try engine.dropKeyCache()
                logger.notice("erasure ledger changed: erased subjects are withheld and cached data keys dropped",
                              metadata: ["erasedSubjects": "\(erased.count)"])
            }
        } catch {
            logger.critical("erasure ledger unreadable; keeping the erasures known so far", metadata: ["error": "\(error)"])
        }
    }

    public func stop() { lock.withLock { stopped = true } }
}
