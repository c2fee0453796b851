import Foundation
import VaultCrypto

/// Reads a known-answer vector file from the test bundle's `Vectors` folder.
func loadVectors<T: Decodable>(_ name: String, as type: T.Type = T.self) throws -> T {
    guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Vectors") else {
        throw VectorError.missing(name)
    }
    // The RFCs' vector files name fields in snake_case.
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    return try decoder.decode(T.self, from: Data(contentsOf: url))
}

enum VectorError: Error {
    case missing(String)
    case badHex(String)
}

/// Hex from a vector file; a malformed vector is a test failure, not a crash.
func hex(_ text: String) throws -> [UInt8] {
    guard let bytes = Hex.decode(text) else { throw VectorError.badHex(text) }
    return bytes
}
