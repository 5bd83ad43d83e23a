import Pipeline
import XCTest

final class PipelineFileTests: XCTestCase {
    func testShippedExampleParsesAndFlagsOverrideIt() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let p = try PipelineFile.load(path: root.appendingPathComponent("pipelines/local-backup.yaml").path)
        let fromFile = p.resolve(uri: nil, namespaces: [], repo: nil, level: nil)
        XCTAssertEqual(fromFile.namespaces, ["shop.*"])
        XCTAssertEqual(fromFile.compressionLevel, 3)
        XCTAssertNotNil(fromFile.uri)
        let flags = p.resolve(uri: "mongodb://other/", namespaces: ["a.b"], repo: "/r", level: 9)
        XCTAssertEqual(flags.uri, "mongodb://other/")
        XCTAssertEqual(flags.namespaces, ["a.b"])
        XCTAssertEqual(flags.repo, "/r")
        XCTAssertEqual(flags.compressionLevel, 9)
    }

    func testUnknownFieldIsNamedWithItsLine() {
        let yaml = "source:\n  uri: mongodb://x/\n  namespaces: [a.*]\narchive:\n  repo: /r\n  compresion: {codec: zstd}\n"
        XCTAssertThrowsError(try PipelineFile.parse(yaml, file: "p.yaml")) { e in
            let text = "\(e)"
            XCTAssertTrue(text.hasPrefix("p.yaml:6: archive.compresion: unknown field"), text)
        }
    }

    func testWrongTypeAndBadValuesAreNamed() {
        XCTAssertThrowsError(try PipelineFile.parse("archive:\n  compression:\n    level: 42\n", file: "p.yaml")) { e in
            XCTAssertTrue("\(e)".contains("p.yaml:3: archive.compression.level"), "\(e)")
        }
        XCTAssertThrowsError(try PipelineFile.parse("source:\n  namespaces: 5\n", file: "p.yaml")) { e in
            XCTAssertTrue("\(e)".contains("source.namespaces"), "\(e)")
        }
        XCTAssertThrowsError(try PipelineFile.parse("archive:\n  blockSize: lots\n", file: "p.yaml")) { e in
            XCTAssertTrue("\(e)".contains("archive.blockSize"), "\(e)")
        }
    }

    func testSizes() {
        XCTAssertEqual(PipelineFile.parseSize("1MiB"), 1 << 20)
        XCTAssertEqual(PipelineFile.parseSize("256 KiB"), 256 << 10)
        XCTAssertEqual(PipelineFile.parseSize("4096"), 4096)
        XCTAssertNil(PipelineFile.parseSize("big"))
    }
}
