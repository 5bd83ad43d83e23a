import XCTest
final class PIntegrationTestsTests: XCTestCase { func testNothing() {} }
