import Foundation
import Pseudonymization
import VaultCrypto

/// HMAC-SHA256 and AES-256-GCM on 15-byte inputs (an IPv4 address), measured
/// beside `openssl speed` in the same run so the ratio survives a noisy machine.
enum CryptoBenchmark {
    static func run(seconds: Int) throws {
        let message = Array("203.0.113.255__".utf8)  // 15 bytes
        let aad = Array(repeating: UInt8(0x2a), count: 13)  // as in `openssl speed -aead`
        let key = try SecureBytes.random(count: 32)
        let nonce = try SystemRandom.bytes(12)

        let hmac = try HMACSHA256(key: key)
        var mac = [UInt8](repeating: 0, count: 32)
        let hmacRate = try measure(seconds: seconds) {
            try hmac.reset()
            try message.withUnsafeBytes { try hmac.update($0) }
            try mac.withUnsafeMutableBytes { try hmac.finalize(into: $0) }
        }
        let freshHMACRate = try measure(seconds: seconds) {
            _ = try HMACSHA256(key: key).authenticationCode(for: message)
        }

        let cipher = try AESGCM(key: key)
        var sealed = [UInt8](repeating: 0, count: message.count + 16)
        let sealRate = try measure(seconds: seconds) {
            try message.withUnsafeBytes { message in
                try nonce.withUnsafeBytes { nonce in
                    try aad.withUnsafeBytes { aad in
                        try sealed.withUnsafeMutableBytes { try cipher.seal(message, nonce: nonce, aad: aad, into: $0) }
                    }
                }
            }
        }
        var freshNonce = [UInt8](repeating: 0, count: 12)
        let sealWithNonceRate = try measure(seconds: seconds) {
            try freshNonce.withUnsafeMutableBytes { try SystemRandom.fill($0) }
            try message.withUnsafeBytes { message in
                try freshNonce.withUnsafeBytes { nonce in
                    try aad.withUnsafeBytes { aad in
                        try sealed.withUnsafeMutableBytes { try cipher.seal(message, nonce: nonce, aad: aad, into: $0) }
                    }
                }
            }
        }

        // What the pipeline does per message: two tokens, two vault entries
        // (AAD = domain ‖ token ‖ field ‖ data key id, nonces drawn in bulk).
        let tokenizer = try Tokenizer(key: try TokenizationKeyring.generate(now: Date()).active)
        let sealer = try VaultSealer(dataKeyID: UUID().uuidString.lowercased(), key: try SecureBytes.random(count: 32))
        let ip = "203.0.113.255"
        let device = "593-47-5928"
        let perMessageRate = try measure(seconds: seconds) {
            let ipToken = try tokenizer.token(for: ip, field: .ip)
            let deviceToken = try tokenizer.token(for: device, field: .deviceID)
            _ = try sealer.seal(ip, token: ipToken, field: .ip)
            _ = try sealer.seal(device, token: deviceToken, field: .deviceID)
        }

        let opensslHMAC = try opensslSpeed(["-hmac", "sha256"], seconds: seconds)
        let opensslGCM = try opensslSpeed(["-aead", "-evp", "aes-256-gcm"], seconds: seconds)

        print("Crypto on 15-byte inputs, \(seconds) s per measurement, one core")
        print(row("operation", "ops/s", "openssl speed", "ratio"))
        print(row("HMAC-SHA256, reused keyed context", hmacRate, opensslHMAC))
        print(row("HMAC-SHA256, new context per message", freshHMACRate, opensslHMAC))
        print(row("AES-256-GCM seal (13-byte AAD)", sealRate, opensslGCM))
        print(row("AES-256-GCM seal + random nonce", sealWithNonceRate, opensslGCM))
        // The openssl equivalent of one message: two HMACs and two seals.
        print(row("per message: 2 tokens + 2 sealed entries", perMessageRate, 1 / (2 / opensslHMAC + 2 / opensslGCM)))
    }

    /// Operations per second of `body`, run for about `seconds`.
    static func measure(seconds: Int, _ body: () throws -> Void) throws -> Double {
        let clock = ContinuousClock()
        for _ in 0..<10_000 { try body() }  // warm-up
        var operations = 0
        let start = clock.now
        let end = start + .seconds(seconds)
        while clock.now < end {
            for _ in 0..<1_000 { try body() }
            operations += 1_000
        }
        let elapsed = clock.now - start
        return Double(operations) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    /// Runs `openssl speed -mr` for 15-byte blocks and returns its operations per second.
    static func opensslSpeed(_ algorithm: [String], seconds: Int) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "speed", "-mr", "-elapsed", "-seconds", String(seconds), "-bytes", "15"] + algorithm
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output  // `openssl speed -mr` writes some results to stderr
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // "+R:<count>:<name>:<seconds>" is the machine-readable result line.
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix("+R:") {
            let fields = line.split(separator: ":")
            if fields.count >= 4, let count = Double(fields[1]), let time = Double(fields[3]), time > 0 { return count / time }
        }
        throw BenchmarkError("openssl speed \(algorithm.joined(separator: " ")) printed no result")
    }

    static func row(_ name: String, _ rate: Double, _ baseline: Double) -> String {
        row(name, format(rate), format(baseline), String(format: "%.2f", rate / baseline))
    }

    static func row(_ a: String, _ b: String, _ c: String, _ d: String) -> String {
        "| " + [a.padding(toLength: 40, withPad: " ", startingAt: 0), b, c, d].joined(separator: " | ") + " |"
    }

    static func format(_ rate: Double) -> String { String(format: "%.0f", rate) }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
