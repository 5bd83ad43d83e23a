import Archive
import Pipeline
@testable import Sidecar
import XCTest

/// What SIGHUP may change in a running pipeline, and what needs a restart.
final class ReloadTests: XCTestCase {
    let base = """
    version: 1
    name: p
    source: {uri: "mongodb://a/", namespaces: [shop.*]}
    archive: {repo: /r}
    schedule: {baseSnapshot: "0 2 * * *", timeZone: Europe/Berlin}
    retention: {keepLast: 7}
    metrics: {listen: "127.0.0.1:9464", stallSeconds: 60}
    """

    func testSettingsComeFromTheFile() throws {
        let s = try ReloadableSettings(try PipelineFile.parse(base, file: "p.yaml"))
        XCTAssertEqual(s.schedule?.expression, "0 2 * * *")
        XCTAssertEqual(s.timeZone.identifier, "Europe/Berlin")
        XCTAssertEqual(s.retention, RetentionPolicy(keepLast: 7, keepDays: nil))
        XCTAssertEqual(s.stallSeconds, 60)
        let defaults = try ReloadableSettings(try PipelineFile.parse("name: p\n", file: "p.yaml"))
        XCTAssertNil(defaults.schedule)
        XCTAssertEqual(defaults.timeZone.secondsFromGMT(), 0)
        XCTAssertEqual(defaults.stallSeconds, 120)
    }

    func testOnlyScheduleRetentionAndStallReloadWithoutARestart() throws {
        let old = try PipelineFile.parse(base, file: "p.yaml")
        let safe = try PipelineFile.parse(base.replacingOccurrences(of: "keepLast: 7", with: "keepLast: 9")
            .replacingOccurrences(of: "0 2 * * *", with: "30 3 * * *").replacingOccurrences(of: "stallSeconds: 60", with: "stallSeconds: 90"), file: "p.yaml")
        XCTAssertEqual(ReloadableSettings.needsRestart(old: old, new: safe), [])
        let unsafe = try PipelineFile.parse(base.replacingOccurrences(of: "shop.*", with: "other.*")
            .replacingOccurrences(of: "/r}", with: "/s}").replacingOccurrences(of: "9464", with: "9465"), file: "p.yaml")
        XCTAssertEqual(ReloadableSettings.needsRestart(old: old, new: unsafe), ["source", "archive", "metrics.listen"])
    }
}
