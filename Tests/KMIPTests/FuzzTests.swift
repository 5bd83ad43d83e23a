@testable import KMIP
import XCTest

/// Property tests with a seeded generator (the same inputs on every run): decoding random
/// and mutated bytes either succeeds or throws, never crashes, and whatever it accepts
/// re-encodes to exactly the bytes it was given.
final class FuzzTests: XCTestCase {
    /// Decodes `bytes`; on success checks the round trip, and for a Structure that
    /// `messageLength` frames it whole.
    func checkDecode(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> Bool {
        do {
            let item = try TTLV.decode(bytes)
            XCTAssertEqual(item.encode(), bytes, "accepted bytes must re-encode identically", file: file, line: line)
            if item.value.type == .structure {
                XCTAssertEqual(try TTLV.messageLength(header: bytes), bytes.count, file: file, line: line)
            }
            return true
        } catch let error as TTLVError {
            XCTAssertTrue((0...bytes.count).contains(error.offset), "\(error)", file: file, line: line)
            return false
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return false
        }
    }

    /// Runs the whole response path, every typed reader included; only this module's
    /// three error types may come out.
    func checkResponse(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        func expectOurError(_ body: () throws -> Any) {
            do { _ = try body() } catch is TTLVError {} catch is KMIPMessageError {} catch is KMIPOperationError {} catch {
                XCTFail("unexpected error \(error)", file: file, line: line)
            }
        }
        guard let response = try? KMIPMessage.parseResponse(bytes) else {
            expectOurError { try KMIPMessage.parseResponse(bytes) }
            return
        }
        for item in response.items {
            _ = "\(item)"
            expectOurError { try item.queryResult() }
            expectOurError { try item.discoverVersionsResult() }
            expectOurError { try item.createResult() }
            expectOurError { try item.registerResult() }
            expectOurError { try item.getResult() }
            expectOurError { try item.getAttributesResult() }
            expectOurError { try item.activateResult() }
            expectOurError { try item.revokeResult() }
            expectOurError { try item.destroyResult() }
            expectOurError { try item.locateResult() }
            if let id = item.batchItemID { expectOurError { try response.item(batchItemID: id) } }
        }
        expectOurError { try response.getResult() }
    }

    // MARK: Generators

    func randomTag(_ rng: inout SeededRandom) -> TTLV.Tag {
        let known: [TTLV.Tag] = [.uniqueIdentifier, .attribute, .attributeName, .attributeValue, .keyBlock,
                                 .keyMaterial, .objectType, .operation, .batchItem, .resultStatus]
        return Bool.random(using: &rng) ? known.randomElement(using: &rng)!
            : TTLV.Tag(rawValue: UInt32.random(in: 0...0xFF_FFFF, using: &rng))
    }

    func randomText(_ rng: inout SeededRandom) -> String {
        let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0xA0...0x2FF, 0x4E00...0x4FFF, 0x1F600...0x1F64F, 0...0x1F]
        var s = String.UnicodeScalarView()
        for _ in 0..<Int.random(in: 0...20, using: &rng) {
            let pool = pools.randomElement(using: &rng)!
            s.append(Unicode.Scalar(UInt32.random(in: pool, using: &rng))!)
        }
        return String(s)
    }

    func randomItem(_ rng: inout SeededRandom, depth: Int) -> TTLV {
        let tag = randomTag(&rng)
        let kind = Int.random(in: depth >= 6 ? 2...10 : 1...10, using: &rng)
        let value: TTLV.Value
        switch kind {
        case 1: value = .structure((0..<Int.random(in: 0...4, using: &rng)).map { _ in randomItem(&rng, depth: depth + 1) })
        case 2: value = .integer(Int32.random(in: .min ... .max, using: &rng))
        case 3: value = .longInteger(Int64.random(in: .min ... .max, using: &rng))
        case 4: value = .bigInteger(rng.bytes(8 * Int.random(in: 1...3, using: &rng)))
        case 5: value = .enumeration(UInt32.random(in: 0 ... .max, using: &rng))
        case 6: value = .boolean(Bool.random(using: &rng))
        case 7: value = .textString(randomText(&rng))
        case 8: value = .byteString(rng.bytes(Int.random(in: 0...40, using: &rng)))
        case 9: value = .dateTime(Int64.random(in: .min ... .max, using: &rng))
        default: value = .interval(UInt32.random(in: 0 ... .max, using: &rng))
        }
        return TTLV(tag, value)
    }

    /// Offsets of every item header in an encoded item.
    func headerOffsets(_ item: TTLV, at start: Int = 0) -> [Int] {
        var offsets = [start]
        if let children = item.children {
            var at = start + 8
            for child in children {
                offsets += headerOffsets(child, at: at)
                at += child.encode().count
            }
        }
        return offsets
    }

    /// Valid messages to mutate: requests of every kind and replies for every operation.
    func corpus() -> [[UInt8]] {
        let key = (0..<32).map { UInt8($0) }
        var messages = [
            KMIPMessage.request(version: .v1_0, .query([.queryOperations, .queryObjects, .queryServerInformation])),
            KMIPMessage.request(version: .v1_4, .discoverVersions(), .createSymmetricKey(name: "mk")),
            KMIPMessage.request(.registerSymmetricKey(material: key, name: "mk"),
                                .registerSecretData(material: Array("pw".utf8), type: .password)),
            KMIPMessage.request(.getAttributes(uniqueIdentifier: "1", names: ["State", "Name"]),
                                .revoke(uniqueIdentifier: "1", reason: .keyCompromise, message: "m",
                                        compromiseOccurrenceDate: Date(timeIntervalSince1970: 1))),
            KMIPMessage.request(.locate(name: "mk", objectType: .symmetricKey), .get(uniqueIdentifier: "1"),
                                .activate(uniqueIdentifier: "1"), .destroy(uniqueIdentifier: "1")),
        ].map { $0.encode() }
        let block = Reply.keyBlock(format: .raw, material: .byteString(key), algorithm: .aes, bits: 256)
        messages += [
            Reply.message([
                Reply.Item(operation: .get, batchItemID: [0], payload: [
                    TTLV(.objectType, .enumeration(2)), Reply.uid("1"), TTLV(.symmetricKey, .structure([block]))]),
                Reply.Item(operation: .getAttributes, batchItemID: [1], payload: [
                    Reply.uid("1"), Reply.attribute("State", .enumeration(2)),
                    Reply.attribute("Name", .structure([TTLV(.nameValue, .textString("mk")), TTLV(.nameType, .enumeration(1))])),
                    Reply.attribute("Cryptographic Length", .integer(256))]),
            ]).encode(),
            Reply.message([
                Reply.Item(operation: .query, payload: [TTLV(.operation, .enumeration(1)), TTLV(.objectType, .enumeration(2)),
                                                        TTLV(.vendorIdentification, .textString("v")),
                                                        TTLV(.serverInformation, .structure([]))]),
                Reply.Item(operation: .locate, payload: [Reply.uid("a"), Reply.uid("b")]),
                Reply.Item(operation: .destroy, status: .operationFailed, reason: .itemNotFound, message: "gone"),
            ]).encode(),
            Reply.bytes(.get, [TTLV(.objectType, .enumeration(7)), Reply.uid("s"),
                               TTLV(.secretData, .structure([TTLV(.secretDataType, .enumeration(1)),
                                                             Reply.keyBlock(format: .opaque, material: .byteString([1]))]))]),
        ]
        return messages
    }

    // MARK: Properties

    func testRandomTreesRoundTrip() throws {
        var rng = SeededRandom(seed: 1)
        for _ in 0..<3000 {
            let item = randomItem(&rng, depth: 1)
            let bytes = item.encode()
            XCTAssertEqual(bytes.count % 8, 0)
            let decoded = try TTLV.decode(bytes)
            XCTAssertEqual(decoded, item)
            XCTAssertEqual(decoded.encode(), bytes)
        }
    }

    func testRandomBytesNeverCrash() {
        var rng = SeededRandom(seed: 2)
        var accepted = 0
        for i in 0..<20000 {
            var bytes = rng.bytes(Int.random(in: 0...96, using: &rng))
            // Most inputs get a plausible header, so the fuzzing reaches past the type check.
            if i % 4 != 0, bytes.count >= 8 {
                bytes[0] = 0x42
                bytes[3] = UInt8.random(in: 1...10, using: &rng)
                let length = UInt32.random(in: 0...UInt32(bytes.count), using: &rng)
                bytes.replaceSubrange(4..<8, with: [0, 0, UInt8(length >> 8), UInt8(truncatingIfNeeded: length)])
            }
            if checkDecode(bytes) { accepted += 1 }
            _ = try? TTLV.messageLength(header: bytes)
        }
        XCTAssertGreaterThan(accepted, 0, "some random inputs should be valid, or the generator is too narrow")
    }

    func testRandomHeadersFrameSanely() {
        var rng = SeededRandom(seed: 3)
        for _ in 0..<20000 {
            let header = rng.bytes(8)
            if let length = try? TTLV.messageLength(header: header) {
                XCTAssertEqual(header[3], 1)
                XCTAssertGreaterThanOrEqual(length, 8)
                XCTAssertLessThanOrEqual(length, TTLV.Limits.default.maximumLength)
                XCTAssertEqual(length % 8, 0)
            }
        }
    }

    func testMutatedMessagesNeverCrash() throws {
        var rng = SeededRandom(seed: 4)
        let messages = corpus()
        let offsets = try messages.map { headerOffsets(try TTLV.decode($0)) }
        var accepted = 0
        for round in 0..<12000 {
            let which = round % messages.count
            var bytes = messages[which]
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                switch Int.random(in: 0..<7, using: &rng) {
                case 0: // flip a bit
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    bytes[i] ^= 1 << UInt8.random(in: 0...7, using: &rng)
                case 1: // set a byte
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 2: // insert a byte
                    bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                case 3: // delete a byte
                    if bytes.count > 1 { bytes.remove(at: Int.random(in: 0..<bytes.count, using: &rng)) }
                case 4: // tamper with a length field
                    let header = offsets[which].randomElement(using: &rng)!
                    guard header + 8 <= bytes.count else { break }
                    let old = bytes.readBigEndianUInt32(at: header + 4)
                    let new: UInt32 = [0, 1, 7, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, old &+ 1, old &- 1, old &+ 8,
                                       old &- 8, old ^ 0x100, UInt32(bytes.count)].randomElement(using: &rng)!
                    bytes.writeBigEndian(new, at: header + 4)
                case 5: // change an item's type
                    let header = offsets[which].randomElement(using: &rng)!
                    if header + 3 < bytes.count { bytes[header + 3] = UInt8.random(in: 0...11, using: &rng) }
                default: // truncate or extend
                    if Bool.random(using: &rng) {
                        bytes.removeLast(Int.random(in: 0...bytes.count, using: &rng))
                    } else {
                        bytes += rng.bytes(Int.random(in: 1...16, using: &rng))
                    }
                }
            }
            if checkDecode(bytes) { accepted += 1 }
            checkResponse(bytes)
        }
        XCTAssertGreaterThan(accepted, 0, "some mutations (of values) should stay valid")
    }

    /// Mutates a tree rather than bytes: the TTLV stays valid, the message does not, which
    /// drives the message layer and every typed reader through wrong types, missing,
    /// repeated and unknown fields.
    func mutateTree(_ item: TTLV, _ rng: inout SeededRandom) -> TTLV {
        guard var children = item.children, !children.isEmpty else {
            // A leaf: keep it, retype it, or give it another value of its type.
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: return randomItem(&rng, depth: 6)
            case 1: return TTLV(item.tag, randomItem(&rng, depth: 6).value)
            default: return item
            }
        }
        let i = Int.random(in: 0..<children.count, using: &rng)
        switch Int.random(in: 0..<7, using: &rng) {
        case 0: children.remove(at: i)
        case 1: children.insert(children[i], at: i)
        case 2: children.insert(randomItem(&rng, depth: 5), at: Int.random(in: 0...children.count, using: &rng))
        case 3: children[i].tag = randomTag(&rng)
        case 4: children.swapAt(i, Int.random(in: 0..<children.count, using: &rng))
        default: children[i] = mutateTree(children[i], &rng)
        }
        return TTLV(item.tag, .structure(children))
    }

    func testStructurallyMutatedResponsesNeverCrash() throws {
        var rng = SeededRandom(seed: 6)
        let responses = try corpus().map { try TTLV.decode($0) }.filter { $0.tag == .responseMessage }
        XCTAssertFalse(responses.isEmpty)
        var parsed = 0
        for round in 0..<6000 {
            var tree = responses[round % responses.count]
            for _ in 0..<Int.random(in: 1...3, using: &rng) { tree = mutateTree(tree, &rng) }
            let bytes = tree.encode()
            XCTAssertTrue(checkDecode(bytes))
            if (try? KMIPMessage.parseResponse(bytes)) != nil { parsed += 1 }
            checkResponse(bytes)
        }
        XCTAssertGreaterThan(parsed, 1000, "most tree mutations should still parse as messages")
    }

    func testUnmutatedCorpusIsValid() throws {
        for bytes in corpus() {
            XCTAssertTrue(checkDecode(bytes))
            checkResponse(bytes)
        }
    }

    func testEveryPrefixOfEveryCorpusMessageFails() {
        for bytes in corpus() {
            for cut in 0..<bytes.count {
                XCTAssertThrowsError(try TTLV.decode(bytes[0..<cut]))
                XCTAssertThrowsError(try KMIPMessage.parseResponse(bytes[0..<cut]))
            }
        }
    }
}
