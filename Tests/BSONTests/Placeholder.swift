import XCTest
final class PBSONTestsTests: XCTestCase { func testNothing() {} }
