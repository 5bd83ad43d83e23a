import XCTest
final class PArchiveTestsTests: XCTestCase { func testNothing() {} }
