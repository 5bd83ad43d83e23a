import Observability
import XCTest

/// A clock the test moves by hand: no sleeping, no timing.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var t = 1000.0
    var now: Double { lock.withLock { t } }
    func advance(_ s: Double) { lock.withLock { t += s } }
}

final class ProgressTests: XCTestCase {
    func testPlainLinesEveryTenSeconds() {
        let clock = ManualClock()
        let m = ProgressMeter(label: "backup", unit: .documents, tty: false, clock: { clock.now })
        XCTAssertEqual(m.interval, 10)
        clock.advance(5)
        XCTAssertNil(m.update(done: 40_000, total: 300_000), "nothing before the first interval")
        clock.advance(5)
        // 80,000 in 10 s: 8,000/s; 220,000 left: 27.5 s.
        XCTAssertEqual(m.update(done: 80_000, total: 300_000), "backup: 80000/300000 docs (27%), 8.0k docs/s, ETA 28s")
        clock.advance(1)
        XCTAssertNil(m.update(done: 88_000, total: 300_000))
        clock.advance(9)
        let line = m.update(done: 120_000, total: 300_000, detail: "shop.orders")
        XCTAssertTrue(line?.hasPrefix("backup: 120000/300000 docs (40%), ") == true, line ?? "nil")
        XCTAssertTrue(line?.hasSuffix(" [shop.orders]") == true, line ?? "nil")
        // The rate moved towards 4,000/s (40,000 in the last 10 s), smoothed: 8,000 + (1 - e^-1)(4,000 - 8,000).
        XCTAssertTrue(line?.contains(", 5.5k docs/s, ETA 33s") == true, line ?? "nil")
    }

    func testBarOnATerminal() {
        let clock = ManualClock()
        let m = ProgressMeter(label: "verify b1", unit: .bytes, tty: true, columns: 200, clock: { clock.now })
        XCTAssertEqual(m.interval, 0.25)
        clock.advance(2)
        let line = m.update(done: 50 << 20, total: 200 << 20)
        XCTAssertEqual(line, "verify b1  [#####...............]   25%  50.0 MiB/200.0 MiB  25.0 MiB/s  ETA 6s")
        // A narrow terminal cuts the line rather than wrapping it.
        let narrow = ProgressMeter(label: "restore", unit: .documents, tty: true, columns: 30, clock: { clock.now })
        clock.advance(1)
        XCTAssertEqual(narrow.update(done: 5, total: 10)?.count, 29)
        // A bar shrinks to fit before the line is cut.
        let medium = ProgressMeter(label: "verify", unit: .bytes, tty: true, columns: 90, clock: { clock.now })
        clock.advance(1)
        let fitted = medium.update(done: 1 << 20, total: 4 << 20, detail: "20261123T000240Z-51321e61")
        XCTAssertEqual(fitted, "verify  [##........]   25%  1.0 MiB/4.0 MiB  1.0 MiB/s  ETA 3s  20261123T000240Z-51321e61")
        XCTAssertLessThan(fitted?.count ?? 99, 90)
    }

    func testUnknownTotalAndResetCounts() {
        let clock = ManualClock()
        let m = ProgressMeter(label: "rekey", unit: .records, tty: false, clock: { clock.now })
        clock.advance(10)
        XCTAssertEqual(m.update(done: 5_000, total: nil), "rekey: 5000 records, 500 records/s")
        // The next backup starts again from 0: its work still counts towards the rate.
        _ = m.update(done: 1_000, total: 2_000)
        clock.advance(10)
        XCTAssertEqual(m.update(done: 2_000, total: 4_000), "rekey: 2000/4000 records (50%), 310 records/s, ETA 7s")
    }

    func testFormatting() {
        XCTAssertEqual(ProgressMeter.formatShort(950), "950")
        XCTAssertEqual(ProgressMeter.formatShort(8_100), "8.1k")
        XCTAssertEqual(ProgressMeter.formatShort(123_456), "123k")
        XCTAssertEqual(ProgressMeter.formatShort(3_400_000), "3.4M")
        XCTAssertEqual(ProgressMeter.formatShort(2.5), "2.5")
        XCTAssertEqual(ProgressMeter.formatBytes(512), "512 B")
        XCTAssertEqual(ProgressMeter.formatBytes(1536), "1.5 KiB")
        XCTAssertEqual(ProgressMeter.formatDuration(22), "22s")
        XCTAssertEqual(ProgressMeter.formatDuration(185), "3m05s")
        XCTAssertEqual(ProgressMeter.formatDuration(7_260), "2h01m")
    }
}
