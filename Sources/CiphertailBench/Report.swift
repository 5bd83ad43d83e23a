import Foundation

/// MB here is 10^6 bytes, for throughput (of raw BSON) and for RSS alike.
func megabytes(_ bytes: Int64) -> Double { Double(bytes) / 1e6 }

struct PhaseResult: Codable {
    var name: String
    var documents: Int64
    var bytes: Int64  // raw BSON moved, the basis of MB/s
    var seconds: Double
    /// CPU time of the client side (this process, or the child), never of mongod.
    var cpuSeconds: Double
    var docsPerSecond: Double
    var megabytesPerSecond: Double
    /// Child processes only: wait4 ru_maxrss, the bench's own peak when it spawned the child
    /// (ru_maxrss cannot go below it), and the highest VmHWM sampled while the child ran.
    var peakRSSBytes: Int64?
    var peakRSSFloorBytes: Int64?
    var sampledPeakRSSBytes: Int64?

    init(_ name: String, documents: Int64, bytes: Int64, timing: Timing) {
        self.name = name
        self.documents = documents
        self.bytes = bytes
        seconds = timing.seconds
        cpuSeconds = timing.cpuSeconds
        docsPerSecond = Double(documents) / seconds
        megabytesPerSecond = megabytes(bytes) / seconds
    }

    /// A child process; its peak RSS only where it was spawned while this process was small
    /// (otherwise ru_maxrss would merely echo our own peak, see runChild).
    init(_ name: String, documents: Int64, bytes: Int64, child: ChildRun, withRSS: Bool = true) {
        self.init(name, documents: documents, bytes: bytes, timing: Timing(seconds: child.seconds, cpuSeconds: child.cpuSeconds))
        if withRSS {
            peakRSSBytes = child.maxRSS
            peakRSSFloorBytes = child.maxRSSFloor
            sampledPeakRSSBytes = child.sampledPeakRSS
        }
    }

    /// Whether ru_maxrss measured the child rather than echoing the bench's own footprint.
    var peakRSSIsChilds: Bool {
        guard let peak = peakRSSBytes, let floor = peakRSSFloorBytes else { return false }
        return peak > floor
    }
}

struct Goal: Codable {
    var name: String
    var value: Double
    var target: String
    var met: Bool
}

struct Results: Codable {
    struct Seed: Codable {
        var reused: Bool
        var seconds: Double
    }
    struct Compression: Codable {
        var codec = "zstd"
        var level = 3
        var rawBytes: Int64
        var storedBytes: Int64
        var ratio: Double
    }

    var date: Date
    var uri: String
    var namespace: String
    var documents: Int
    var averageDocumentBytes: Double
    var seed: Seed
    var scanRunsSeconds: [Double]
    var phases: [String: PhaseResult]
    var compression: Compression
    var backupToScan: Double
    var restoreToBulkInsert: Double
    var goals: [Goal]
    var notes: [String]
    var encryption: Encryption?
    var kmip: KMIPCosts?
    var tailing: TailingResults?
    var erasure: ErasureResults?

    struct Encryption: Codable {
        var encryptedValuesPerBackup: Int64
        /// Values encrypted per CPU-second of the warm backup process (all its work counted).
        var encryptionsPerCoreSecond: Double
        var warmBackupToScan: Double
        var coldBackupToScan: Double
        var decryptingRestoreToBulkInsert: Double
        var costs: CryptoCosts?
    }
}

func printEncryption(_ e: Results.Encryption) {
    func fmt(_ v: Double, _ d: Int) -> String { String(format: "%.\(d)f", v) }
    print("")
    print("encryption: \(e.encryptedValuesPerBackup) values per backup; \(fmt(e.encryptionsPerCoreSecond, 0)) encryptions per CPU-second "
          + "of the warm backup (everything it does counted)")
    print("  encrypted backup / scan: warm \(fmt(e.warmBackupToScan, 3)), cold (creating the keys) \(fmt(e.coldBackupToScan, 3)); "
          + "decrypting restore / bulk insert: \(fmt(e.decryptingRestoreToBulkInsert, 2))")
    if let c = e.costs {
        print("  one random value of 32 bytes, one thread, µs: libmongocrypt explicit \(fmt(c.libmongocryptExplicitMicros, 2)), "
              + "libmongocrypt batched \(fmt(c.libmongocryptBatchedMicros, 2)); OpenSSL as libmongocrypt calls it "
              + "\(fmt(c.opensslAsLibmongocryptMicros, 2)), OpenSSL with reused contexts \(fmt(c.opensslReusedMicros, 2)) "
              + "(batched / floor = \(fmt(c.batchedOverFloor, 1))x)")
    }
}

func printTable(_ r: Results, order: [String]) {
    func col(_ s: String, _ width: Int, left: Bool = false) -> String {
        let pad = String(repeating: " ", count: max(0, width - s.count))
        return left ? s + pad : pad + s
    }
    func fmt(_ v: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", v) }

    print("")
    print("ciphertail benchmark: \(r.documents) documents of \(r.namespace), \(fmt(megabytes(Int64(r.averageDocumentBytes * Double(r.documents))), 1)) MB raw BSON, "
          + "\(fmt(r.averageDocumentBytes, 0)) bytes/doc (MB = 10^6 bytes)")
    print("seed: \(r.seed.reused ? "reused existing collection" : "inserted") in \(fmt(r.seed.seconds, 1)) s (not a measured figure)")
    print("")
    let header = col("phase", 26, left: true) + col("docs", 9) + col("docs/s", 11) + col("MB/s", 9) + col("wall s", 9) + col("cpu s", 8) + col("peak RSS MB", 13)
    print(header)
    print(String(repeating: "-", count: header.count))
    for key in order {
        guard let p = r.phases[key] else { continue }
        let rss = p.peakRSSBytes.map { fmt(megabytes($0), 1) + (p.peakRSSIsChilds ? "" : "*") } ?? "-"
        print(col(p.name, 26, left: true) + col(String(p.documents), 9) + col(fmt(p.docsPerSecond, 0), 11)
              + col(fmt(p.megabytesPerSecond, 1), 9) + col(fmt(p.seconds, 2), 9) + col(fmt(p.cpuSeconds, 2), 8) + col(rss, 13))
    }
    print("cpu s: client-side CPU (this process, or the child process), mongod's not included; "
          + "peak RSS: the child's wait4 ru_maxrss")
    print("")
    let c = r.compression
    print("compressed (zstd -\(c.level), ciphertail segments): \(fmt(megabytes(c.rawBytes), 1)) MB -> \(fmt(megabytes(c.storedBytes), 1)) MB, "
          + "ratio \(fmt(c.ratio, 2))x")
    print("")
    for g in r.goals {
        print(col(g.name, 26, left: true) + col(fmt(g.value, 2), 9) + "   goal " + col(g.target, 10, left: true) + (g.met ? "met" : "NOT MET"))
    }
    if !r.notes.isEmpty {
        print("")
        r.notes.forEach { print("note: \($0)") }
    }
}

func writeJSON(_ r: Results, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    try encoder.encode(r).write(to: url, options: .atomic)
}
