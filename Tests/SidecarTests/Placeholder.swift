import XCTest
@testable import Sidecar

final class PlaceholderSidecarTests: XCTestCase {}
