import Foundation
import Pipeline
import XCTest
import Yams

/// The operational files under ops/ (systemd units, Prometheus rules, example pipelines)
/// against what the code and the docs provide: names that must match do match.
final class OpsFilesTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Every metric `ciphertail run` exports (docs/OBSERVABILITY.md).
    static let exportedMetrics: Set<String> = [
        "ciphertail_capture_events_total", "ciphertail_capture_documents_total", "ciphertail_bytes_in_total",
        "ciphertail_bytes_out_total", "ciphertail_compression_ratio", "ciphertail_capture_lag_seconds",
        "ciphertail_replication_lag_seconds", "ciphertail_replication_events_total", "ciphertail_resume_token_age_seconds",
        "ciphertail_segments_written_total", "ciphertail_kmip_request_duration_seconds", "ciphertail_kmip_errors_total",
        "ciphertail_erasures_total", "ciphertail_base_snapshots_total", "ciphertail_pruned_backups_total",
        "ciphertail_gaps_total", "ciphertail_capture_paused", "ciphertail_lease_held", "ciphertail_alerts_total",
    ]
    static let histograms: Set<String> = ["ciphertail_kmip_request_duration_seconds"]

    func path(_ relative: String) -> String { Self.root.appendingPathComponent(relative).path }

    func text(_ relative: String) throws -> String {
        try String(contentsOfFile: path(relative), encoding: .utf8)
    }

    func yamlFiles(in folder: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path(folder))
            .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map { "\(folder)/\($0)" }
    }

    /// GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens.
    static func anchor(_ heading: String) -> String {
        String(heading.lowercased().unicodeScalars.compactMap { c -> Character? in
            if c == " " { return "-" }
            if c == "-" || c == "_" || CharacterSet.alphanumerics.contains(c) { return Character(c) }
            return nil
        })
    }

    // MARK: Prometheus

    func testAlertRulesParseAndEachNamesSeveritySummaryAndAnExistingRunbook() throws {
        let doc = try XCTUnwrap(try Yams.load(yaml: try text("ops/prometheus/alerts.yml")) as? [String: Any])
        let groups = try XCTUnwrap(doc["groups"] as? [[String: Any]])
        var alerts = 0
        var names = Set<String>()
        for group in groups {
            XCTAssertNotNil(group["name"] as? String)
            for rule in try XCTUnwrap(group["rules"] as? [[String: Any]]) {
                let name = try XCTUnwrap(rule["alert"] as? String, "a rule without alert: \(rule)")
                XCTAssertTrue(names.insert(name).inserted, "\(name) is defined twice")
                alerts += 1
                XCTAssertFalse((rule["expr"] as? String ?? "").isEmpty, "\(name): no expr")
                let labels = rule["labels"] as? [String: Any] ?? [:]
                XCTAssertTrue(["critical", "warning", "info"].contains(labels["severity"] as? String ?? ""), "\(name): severity")
                let annotations = rule["annotations"] as? [String: Any] ?? [:]
                XCTAssertFalse((annotations["summary"] as? String ?? "").isEmpty, "\(name): no summary")
                XCTAssertFalse((annotations["description"] as? String ?? "").isEmpty, "\(name): no description")
                let url = try XCTUnwrap(annotations["runbook_url"] as? String, "\(name): no runbook_url")
                let range = try XCTUnwrap(url.range(of: "docs/runbooks/"), "\(name): runbook_url \(url) is not under docs/runbooks/")
                let parts = url[range.lowerBound...].split(separator: "#", maxSplits: 1).map(String.init)
                XCTAssertTrue(parts[0].hasSuffix(".md"), "\(name): \(url)")
                XCTAssertTrue(FileManager.default.fileExists(atPath: path(parts[0])), "\(name): \(parts[0]) does not exist")
                if parts.count == 2, let runbook = try? text(parts[0]) {
                    let anchors = Set(runbook.split(separator: "\n").filter { $0.hasPrefix("#") }
                        .map { Self.anchor($0.drop(while: { $0 == "#" }).trimmingCharacters(in: .whitespaces)) })
                    XCTAssertTrue(anchors.contains(parts[1]), "\(name): \(parts[0]) has no heading for #\(parts[1])")
                }
            }
        }
        XCTAssertGreaterThanOrEqual(alerts, 8)
        for wanted in ["CiphertailDown", "CiphertailCaptureStalled", "CiphertailCaptureLagHigh", "CiphertailGapRecorded",
                       "CiphertailKMIPErrors", "CiphertailCapturePausedDiskFull", "CiphertailReplicationLagHigh",
                       "CiphertailBaseSnapshotFailed", "CiphertailNoLeader", "CiphertailTwoLeaders"] {
            XCTAssertTrue(names.contains(wanted), "missing alert \(wanted)")
        }
    }

    func testAlertRulesUseOnlyExportedMetrics() throws {
        let rules = try text("ops/prometheus/alerts.yml")
        let regex = try NSRegularExpression(pattern: "ciphertail_[a-z0-9_]+")
        let found = Set(regex.matches(in: rules, range: NSRange(rules.startIndex..., in: rules))
            .map { String(rules[Range($0.range, in: rules)!]) })
        XCTAssertFalse(found.isEmpty)
        for name in found {
            var base = name
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && Self.histograms.contains(String(name.dropLast(suffix.count))) {
                base = String(name.dropLast(suffix.count))
            }
            XCTAssertTrue(Self.exportedMetrics.contains(base), "alerts.yml uses \(name), which ciphertail does not export")
        }
    }

    func testScrapeConfigParsesAndLabelsEveryTargetWithItsPipeline() throws {
        let doc = try XCTUnwrap(try Yams.load(yaml: try text("ops/prometheus/prometheus.yml")) as? [String: Any])
        let jobs = try XCTUnwrap(doc["scrape_configs"] as? [[String: Any]])
        XCTAssertTrue(jobs.contains { ($0["job_name"] as? String)?.hasPrefix("ciphertail-") == true })
        for job in jobs {
            for sc in job["static_configs"] as? [[String: Any]] ?? [] {
                let labels = sc["labels"] as? [String: Any] ?? [:]
                XCTAssertNotNil(labels["pipeline"] as? String, "\(job["job_name"] ?? "?"): targets without a pipeline label")
            }
        }
    }

    // MARK: systemd

    func serviceSettings(_ relative: String) throws -> [String: [String]] {
        var settings: [String: [String]] = [:]
        for line in try text(relative).split(separator: "\n") {
            let l = line.trimmingCharacters(in: .whitespaces)
            guard !l.hasPrefix("#"), !l.hasPrefix("["), let eq = l.firstIndex(of: "=") else { continue }
            settings[String(l[..<eq]), default: []].append(String(l[l.index(after: eq)...]))
        }
        return settings
    }

    func testServiceUnitIsHardenedAndRunsThePipelineOfItsInstance() throws {
        let s = try serviceSettings("ops/systemd/ciphertail@.service")
        XCTAssertEqual(s["NoNewPrivileges"], ["yes"])
        XCTAssertEqual(s["ProtectSystem"], ["strict"])
        XCTAssertEqual(s["User"], ["ciphertail"])
        XCTAssertEqual(s["Group"], ["ciphertail"])
        XCTAssertEqual(s["CapabilityBoundingSet"], [""])
        XCTAssertEqual(s["UMask"], ["0077"])
        XCTAssertEqual(s["ReadWritePaths"], ["/var/lib/ciphertail"])
        XCTAssertEqual(s["StateDirectoryMode"], ["0700"])
        XCTAssertEqual(s["ExecStart"], ["/usr/local/bin/ciphertail run --pipeline /etc/ciphertail/pipelines/%i.yaml --log-format json"])
        XCTAssertEqual(s["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        XCTAssertEqual(s["Restart"], ["on-failure"])
        for unit in ["ciphertail-backup@.service", "ciphertail-prune@.service"] {
            let o = try serviceSettings("ops/systemd/\(unit)")
            XCTAssertEqual(o["NoNewPrivileges"], ["yes"], unit)
            XCTAssertEqual(o["ProtectSystem"], ["strict"], unit)
            XCTAssertEqual(o["User"], ["ciphertail"], unit)
        }
    }

    /// systemd-analyze verify (and, as root, sysusers and tmpfiles) through ops/check-systemd.sh.
    func testCheckSystemdPasses() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") else {
            throw XCTSkip("/usr/bin/systemd-analyze is not installed")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [path("ops/check-systemd.sh")]
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("check-systemd-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        defer { try? FileManager.default.removeItem(at: output) }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        process.waitUntilExit()
        try handle.close()
        let log = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        XCTAssertEqual(process.terminationStatus, 0, log)
        XCTAssertTrue(log.contains("check-systemd: OK"), log)
    }

    // MARK: Pipelines

    func testEveryExamplePipelineLoads() throws {
        let shipped = try yamlFiles(in: "pipelines")
        let daemon = try yamlFiles(in: "ops/etc/ciphertail/pipelines")
        XCTAssertFalse(shipped.isEmpty)
        XCTAssertFalse(daemon.isEmpty)
        for file in shipped + daemon {
            XCTAssertNoThrow(try PipelineFile.load(path: path(file)), file)
        }
        // A daemon pipeline is started as ciphertail@NAME: the file is NAME.yaml and says name: NAME.
        for file in daemon {
            let p = try PipelineFile.load(path: path(file))
            let stem = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
            XCTAssertEqual(p.name, stem, "\(file): name must equal the file name (the systemd instance)")
            XCTAssertTrue(p.archive?.repo?.hasPrefix("/var/lib/ciphertail/") == true, "\(file): the repository must be under the unit's ReadWritePaths")
            if let vault = p.encryption?.keyVault, !vault.hasPrefix("mongodb") {
                XCTAssertTrue(vault.hasPrefix("/var/lib/ciphertail/"), "\(file): a key vault file must be writable by the unit")
            }
            if let key = p.encryption?.masterKey?.local?.keyFile {
                XCTAssertTrue(key.hasPrefix("/etc/ciphertail/keys/"), "\(file): the master key belongs in /etc/ciphertail/keys")
            }
        }
    }
}
