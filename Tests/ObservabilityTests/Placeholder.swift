import XCTest
@testable import Observability

final class PlaceholderObservabilityTests: XCTestCase {}
