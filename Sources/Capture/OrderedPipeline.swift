import Dispatch
import Foundation

/// Runs jobs concurrently and hands their results back in submission order, with a bound on
/// how many are in flight: for stages (encryption) between an ordered source and an ordered
/// sink (the segment writer).
final class OrderedPipeline<Output> {
    private final class Slot: @unchecked Sendable {
        let done = DispatchGroup()
        var result: Result<Output, Error> = .failure(CancellationError())
    }

    private var slots: [Slot] = []
    private let maxInFlight: Int
    private let sink: (Output) throws -> Void

    init(maxInFlight: Int, sink: @escaping (Output) throws -> Void) {
        self.maxInFlight = max(1, maxInFlight)
        self.sink = sink
    }

    func submit(_ job: @escaping () throws -> Output) throws {
        let slot = Slot()
        slot.done.enter()
        DispatchQueue.global().async {
            slot.result = Result { try job() }
            slot.done.leave()
        }
        slots.append(slot)
        while slots.count > maxInFlight { try drainOne() }
    }

    private func drainOne() throws {
        let slot = slots.removeFirst()
        slot.done.wait()
        try sink(try slot.result.get())
    }

    /// Waits for everything and delivers it; on an error the rest is still waited for.
    func finish() throws {
        var first: Error?
        while !slots.isEmpty {
            do { try drainOne() } catch { if first == nil { first = error } }
        }
        if let first { throw first }
    }
}
