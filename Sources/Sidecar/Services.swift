import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// The runner under swift-service-lifecycle: its blocking work on a thread of its own; a
/// graceful shutdown (SIGTERM, SIGINT) asks it to stop, and it returns once the open segment
/// is committed and the lease released.
public struct PipelineService: Service {
    let runner: PipelineRunner

    public init(_ runner: PipelineRunner) { self.runner = runner }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                let t = Thread {
                    do {
                        try runner.run()
                        continuation.resume()
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
                t.name = "ciphertail.run"
                t.start()
            }
        } onGracefulShutdown: {
            runner.stop()
        }
    }
}

/// SIGHUP: re-reads the settings (the closure loads and validates the pipeline file; a file
/// that no longer loads leaves everything as it was).
public struct ReloadService: Service {
    let reload: @Sendable () -> Void

    public init(reload: @escaping @Sendable () -> Void) { self.reload = reload }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try await cancelWhenGracefulShutdown {
            for await _ in signals { reload() }
        }
    }
}

/// Starts and stops something that runs on its own threads (the metrics endpoint).
public struct BackgroundService: Service {
    let start: @Sendable () throws -> Void
    let stop: @Sendable () -> Void

    public init(start: @escaping @Sendable () throws -> Void, stop: @escaping @Sendable () -> Void) {
        self.start = start
        self.stop = stop
    }

    public func run() async throws {
        try start()
        defer { stop() }
        try? await gracefulShutdown()
    }
}

extension PipelineRunner {
    /// Runs the pipeline with its companions until SIGTERM or SIGINT (or a fatal error, which
    /// is thrown for the CLI to turn into an exit code).
    public func serve(companions: [any Service], logger: Logger) async throws {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: PipelineService(self), successTerminationBehavior: .gracefullyShutdownGroup,
                  failureTerminationBehavior: .gracefullyShutdownGroup),
        ]
        services += companions.map { .init(service: $0, successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup) }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: quiet))
        try await group.run()
    }
}
