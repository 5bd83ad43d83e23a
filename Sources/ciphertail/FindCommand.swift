import ArgumentParser
import BSON
import Erasure
import FieldCrypto
import Foundation
import Mongo
import Pipeline
import Restore

struct FindCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "find",
        abstract: "Query a collection or an archive, with encrypted fields handled the client-side FLE way.",
        discussion: """
        Equality on deterministic fields works: the filter's values are encrypted with the right \
        data key (for per-subject keys, the filter must name the subject), and only ciphertexts \
        are compared. Random fields cannot be queried. Results are printed decrypted, one \
        document per line in relaxed extended JSON (a JSON array with --json).

          ciphertail find --pipeline p.yaml --uri mongodb://... --ns shop.users --filter '{"userId":"u42","email":"a@b.c"}'
          ciphertail find --pipeline p.yaml --repo /srv/ct --ns shop.users --filter '{"userId":"u42"}'
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions

    @Option(help: ArgumentHelp("Query this deployment.", valueName: "uri"))
    var uri: String?

    @Option(help: ArgumentHelp("Query this repository's backup instead of a deployment.", valueName: "dir"))
    var repo: String?

    @Option(help: ArgumentHelp("Backup id (with --repo; default: the newest).", valueName: "id"))
    var backup: String?

    @Option(help: ArgumentHelp("Namespace db.coll.", valueName: "ns"))
    var ns: String

    @Option(help: ArgumentHelp("Filter as extended JSON (default {}).", valueName: "json"))
    var filter: String = "{}"

    @Option(help: ArgumentHelp("At most this many documents.", valueName: "n"))
    var limit: Int?

    func validate() throws {
        if (uri == nil) == (repo == nil) { throw ValidationError("give exactly one of --uri (a deployment) or --repo (an archive)") }
    }

    func run() throws {
        try runReportingErrors {
            guard let namespace = Namespace(ns) else { throw ValidationError("--ns \(ns) is not db.coll") }
            let parsed: Document
            do { parsed = try Document(json: filter) } catch { throw ValidationError("--filter: \(error)") }
            let file = try common.loadPipeline()
            var request = FindRequest(namespace: namespace, filter: parsed)
            request.limit = limit
            if let ks = try KeySettings.resolve(file.encryption, keyVault: keys.keyVault, masterKeyFile: keys.masterKeyFile, kmip: keys.kmip.section) {
                let engine = try ks.openEngine()
                request.protector = DocumentProtector(rules: file.encryption?.protectionRules() ?? [], engine: engine)
                request.decryptor = LenientDecryptor(engine: engine, erasure: try keys.erasure(common, rules: request.protector?.rules ?? [])?.1)
            }
            let result = try uri.map { try Finder.inCollection(ConnectionString($0), request) }
                ?? Finder.inArchive(repository: repo!, backupID: backup, request)
            if common.json {
                print("[" + result.documents.map(\.relaxedJSON).joined(separator: ",\n") + "]")
            } else {
                for d in result.documents { print(d.relaxedJSON) }
            }
            let erased = result.undecryptable.filter(\.erased).count
            if erased > 0 {
                FileHandle.standardError.write(Data("\(erased) values of erased subjects in \(namespace) cannot be read (their keys were destroyed)\n".utf8))
            }
            for f in result.undecryptable where !f.erased { FileHandle.standardError.write(Data("ciphertail: cannot decrypt \(f)\n".utf8)) }
            if let b = result.backup { FileHandle.standardError.write(Data("\(result.documents.count) documents from backup \(b)\n".utf8)) }
        }
    }
}
