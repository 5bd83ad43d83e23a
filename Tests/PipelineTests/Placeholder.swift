import XCTest
final class PPipelineTestsTests: XCTestCase { func testNothing() {} }
