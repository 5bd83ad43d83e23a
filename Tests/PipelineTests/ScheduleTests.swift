import Foundation
@testable import Pipeline
import XCTest

final class ScheduleTests: XCTestCase {
    let utc = TimeZone(identifier: "UTC")!
    let berlin = TimeZone(identifier: "Europe/Berlin")!

    func date(_ text: String) -> Date {
        let f = ISO8601DateFormatter()
        return f.date(from: text)!
    }

    func iso(_ d: Date?) -> String {
        guard let d else { return "nil" }
        let f = ISO8601DateFormatter()
        return f.string(from: d)
    }

    func testNightlyInAZoneIsThatZonesWallClock() throws {
        let s = try CronSchedule("0 2 * * *")
        // 02:00 in Berlin in winter is 01:00 UTC, in summer 00:00 UTC.
        XCTAssertEqual(iso(s.next(after: date("2026-11-22T12:00:00Z"), in: berlin)), "2026-11-23T01:00:00Z")
        XCTAssertEqual(iso(s.next(after: date("2026-07-01T12:00:00Z"), in: berlin)), "2026-07-02T00:00:00Z")
        XCTAssertEqual(iso(s.next(after: date("2026-11-22T12:00:00Z"), in: utc)), "2026-11-23T02:00:00Z")
        // Strictly after: a run at the exact time moves to the next day.
        XCTAssertEqual(iso(s.next(after: date("2026-11-23T01:00:00Z"), in: berlin)), "2026-11-24T01:00:00Z")
    }

    func testDaylightSavingChanges() throws {
        let s = try CronSchedule("30 2 * * *")
        // 2026-03-29: Berlin skips 02:00-03:00; the 02:30 run happens once, right after the jump.
        let spring = s.next(after: date("2026-03-28T12:00:00Z"), in: berlin)!
        XCTAssertEqual(spring.timeIntervalSince(date("2026-03-29T00:00:00Z")) / 3600, 1.5, accuracy: 0.51, iso(spring))
        XCTAssertEqual(iso(s.next(after: spring, in: berlin)), "2026-03-30T00:30:00Z")
        // 2026-10-25: 02:30 happens twice; it runs once, then the next day.
        let autumn = s.next(after: date("2026-10-24T12:00:00Z"), in: berlin)!
        let following = s.next(after: autumn, in: berlin)!
        XCTAssertGreaterThan(following.timeIntervalSince(autumn), 20 * 3600, "\(iso(autumn)) then \(iso(following))")
    }

    func testFieldsListsRangesStepsNamesAndShorthands() throws {
        let s = try CronSchedule("*/15 9-17 * * mon-fri")
        XCTAssertEqual(s.minutes, [0, 15, 30, 45])
        XCTAssertEqual(s.hours, Set(9...17))
        XCTAssertEqual(s.weekdays, [1, 2, 3, 4, 5])
        // Saturday 2026-11-21 12:00 UTC: next is Monday 09:00.
        XCTAssertEqual(iso(s.next(after: date("2026-11-21T12:00:00Z"), in: utc)), "2026-11-23T09:00:00Z")
        XCTAssertEqual(try CronSchedule("@daily").next(after: date("2026-11-22T12:00:00Z"), in: utc).map(iso), "2026-11-23T00:00:00Z")
        XCTAssertEqual(try CronSchedule("0 0 * jan,jul 7").weekdays, [0], "7 is Sunday")
        XCTAssertEqual(try CronSchedule("5,10-12 * * * *").minutes, [5, 10, 11, 12])
        // Both day fields restricted: either matches (Vixie cron). 2026-11-23 is a Monday.
        let either = try CronSchedule("0 0 1 * mon")
        XCTAssertEqual(iso(either.next(after: date("2026-11-22T12:00:00Z"), in: utc)), "2026-11-23T00:00:00Z")
        XCTAssertNil(try CronSchedule("0 0 30 2 *").next(after: date("2026-01-01T00:00:00Z"), in: utc), "February 30 never comes")
    }

    func testBadExpressionsSayWhatIsWrong() {
        for (text, needle) in [("0 2 * *", "has 4 fields"), ("61 * * * *", "minute: '61'"), ("* 5-2 * * *", "runs backwards"),
                               ("*/0 * * * *", "step"), ("* * * foo *", "month: 'foo'"), ("1,,2 * * * *", "minute")] {
            XCTAssertThrowsError(try CronSchedule(text), text) { e in XCTAssertTrue("\(e)".contains(needle), "\(text): \(e)") }
        }
    }

    func testServiceSectionsAreValidatedWithFileLineAndField() {
        let cases: [(String, String)] = [
            ("schedule:\n  baseSnapshot: \"0 25 * * *\"\n", "p.yaml:2: schedule.baseSnapshot: hour: '25'"),
            ("schedule:\n  baseSnapshot: \"@daily\"\n  timeZone: Mars/Olympus\n", "p.yaml:3: schedule.timeZone: 'Mars/Olympus' is not a time zone"),
            ("retention:\n  keepLast: 0\n", "p.yaml:2: retention.keepLast: must be at least 1"),
            ("retention:\n  keepDays: -1\n", "p.yaml:2: retention.keepDays"),
            ("lease:\n  ttlSeconds: 1\n", "p.yaml:2: lease.ttlSeconds: 1.0 is outside 3...600"),
            ("lease:\n  namespace: nodot\n", "p.yaml:2: lease.namespace"),
            ("source: {uri: \"mongodb://a/\"}\nreplication:\n  uri: \"mongodb://a/\"\n", "p.yaml:3: replication.uri: is the source cluster"),
            ("replication:\n  batchSize: 10\n", "replication: has no uri"),
            ("metrics:\n  listen: localhost\n", "p.yaml:2: metrics.listen: 'localhost' is not host:port"),
            ("schedule:\n  baseSnapshot: \"@daily\"\n  timezone: UTC\n", "p.yaml:3: schedule.timezone: unknown field"),
        ]
        for (yaml, expected) in cases {
            XCTAssertThrowsError(try PipelineFile.parse(yaml, file: "p.yaml"), yaml) { e in
                XCTAssertTrue("\(e)".hasPrefix(expected) || "\(e)".contains(expected), "\(yaml) gave \(e)")
            }
        }
        // What run needs, with the line of what is missing or of its parent section.
        XCTAssertThrowsError(try PipelineFile.parse("version: 1\nsource:\n  uri: mongodb://a/\narchive:\n  repo: /r\n", file: "p.yaml", forRun: true)) { e in
            XCTAssertTrue("\(e)".hasPrefix("p.yaml:1: name: ciphertail run needs a pipeline name"), "\(e)")
        }
        XCTAssertThrowsError(try PipelineFile.parse("name: x\nsource:\n  uri: mongodb://a/\narchive:\n  compression: {level: 3}\n", file: "p.yaml", forRun: true)) { e in
            XCTAssertTrue("\(e)".hasPrefix("p.yaml:5: archive.repo"), "\(e)")
        }
        XCTAssertNoThrow(try PipelineFile.parse("name: x\nsource:\n  uri: mongodb://a/\narchive:\n  repo: /r\nschedule: {baseSnapshot: '0 2 * * *', timeZone: Europe/Berlin}\nretention: {keepLast: 7, keepDays: 30}\nlease: {ttlSeconds: 15}\nmetrics: {listen: '127.0.0.1:0'}\n", file: "p.yaml", forRun: true))
    }
}
