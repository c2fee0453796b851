public import AWS
import AsyncHTTPClient
import Foundation
public import KeyCustody

/// The real AWS CLI against the emulator the test scripts started: an
/// independent client to produce and inspect messages.
public enum AWSCLI {
    public static func run(_ arguments: [String]) async throws -> String {
        let endpoint = try TestEnvironment.variable("AWS_ENDPOINT_URL")
        let result = try await runProgram("/usr/bin/env", ["aws", "--endpoint-url", endpoint, "--output", "json"] + arguments)
        guard result.status == 0 else {
            throw TestEnvironmentError("aws \(arguments.prefix(2).joined(separator: " ")) failed: \(result.errors)")
        }
        return result.output
    }

    /// A fresh queue with a unique name; returns its URL.
    public static func createQueue(_ prefix: String = "test", attributes: [String: String] = [:]) async throws -> String {
        var arguments = ["sqs", "create-queue", "--queue-name", "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"]
        if !attributes.isEmpty {
            arguments += ["--attributes", attributes.map { "\($0.key)=\($0.value)" }.joined(separator: ",")]
        }
        let json = try JSONSerialization.jsonObject(with: Data(try await run(arguments).utf8)) as? [String: Any]
        guard let url = json?["QueueUrl"] as? String else { throw TestEnvironmentError("create-queue printed no QueueUrl") }
        return url
    }

    /// Sends each body as one message, ten per SendMessageBatch call.
    public static func send(_ queueURL: String, bodies: [String]) async throws {
        for start in stride(from: 0, to: bodies.count, by: 10) {
            let chunk = bodies[start..<min(start + 10, bodies.count)]
            let entries = chunk.enumerated().map { ["Id": "m\($0.offset)", "MessageBody": $0.element] }
            let json = String(decoding: try JSONSerialization.data(withJSONObject: entries), as: UTF8.self)
            _ = try await run(["sqs", "send-message-batch", "--queue-url", queueURL, "--entries", json])
        }
    }

    /// Visible and in-flight message counts.
    public static func depth(_ queueURL: String) async throws -> (visible: Int, inFlight: Int) {
        let output = try await run(["sqs", "get-queue-attributes", "--queue-url", queueURL, "--attribute-names", "All"])
        let attributes =
            (try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])?["Attributes"] as? [String: String] ?? [:]
        return (
            Int(attributes["ApproximateNumberOfMessages"] ?? "") ?? -1, Int(attributes["ApproximateNumberOfMessagesNotVisible"] ?? "") ?? -1
        )
    }
}

/// boto3 for bulk sends: one Python process for thousands of messages instead
/// of one CLI process per ten. Bodies go in on stdin, one per line.
public enum Boto3 {
    public static func send(_ queueURL: String, bodies: [String]) async throws {
        let script = """
            import boto3, sys
            queue = sys.argv[1]
            sqs = boto3.client("sqs")
            lines = sys.stdin.read().split("\\n")[:-1]
            for start in range(0, len(lines), 10):
                entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(lines[start:start + 10])]
                failed = sqs.send_message_batch(QueueUrl=queue, Entries=entries).get("Failed")
                if failed:
                    sys.exit("send failed: %s" % failed)
            """
        let result = try await runProgram(
            "/usr/bin/env", ["python3", "-c", script, queueURL],
            input: bodies.map { $0 + "\n" }.joined())
        guard result.status == 0 else { throw TestEnvironmentError("boto3 send failed: \(result.errors)") }
    }
}

/// The emulator's KMS (moto implements `CreateKey` with `HMAC_256`,
/// `GenerateMac`, `Encrypt` and `Decrypt` with encryption contexts).
public enum TestKMS {
    /// Our client, at AWS_ENDPOINT_URL, on the process-wide HTTP client.
    public static func client() throws -> KMSClient {
        try KMSClient.fromEnvironment(httpClient: .shared, logger: TestEnvironment.logger)
    }

    public static func lazy() -> LazyKMSClient { LazyKMSClient { try client() } }

    /// A new `HMAC_256` key for `GENERATE_VERIFY_MAC`, made with the AWS CLI; its ARN.
    public static func createHMACKey() async throws -> String {
        try await createKey(["--key-spec", "HMAC_256", "--key-usage", "GENERATE_VERIFY_MAC"])
    }

    /// A new symmetric encryption key; its ARN.
    public static func createSymmetricKey() async throws -> String { try await createKey([]) }

    private static func createKey(_ arguments: [String]) async throws -> String {
        let json =
            try JSONSerialization.jsonObject(with: Data(try await AWSCLI.run(["kms", "create-key"] + arguments).utf8)) as? [String: Any]
        guard let arn = (json?["KeyMetadata"] as? [String: Any])?["Arn"] as? String else {
            throw TestEnvironmentError("kms create-key printed no KeyMetadata.Arn")
        }
        return arn
    }

    /// HMAC-SHA256 by KMS of each message, computed by boto3: an independent
    /// client for checking the tokens ingest wrote. Messages in and MACs out as hex.
    public static func generateMacs(keyID: String, messages: [[UInt8]]) async throws -> [[UInt8]] {
        let script = """
            import boto3, sys
            kms = boto3.client("kms")
            for line in sys.stdin.read().split():
                mac = kms.generate_mac(KeyId=sys.argv[1], MacAlgorithm="HMAC_SHA_256", Message=bytes.fromhex(line))["Mac"]
                print(mac.hex())
            """
        let result = try await runProgram(
            "/usr/bin/env", ["python3", "-c", script, keyID], input: messages.map { hex($0) + "\n" }.joined())
        guard result.status == 0 else { throw TestEnvironmentError("boto3 generate_mac failed: \(result.errors)") }
        return result.output.split(separator: "\n").map { line in
            stride(from: 0, to: line.count, by: 2).map { offset in
                let start = line.index(line.startIndex, offsetBy: offset)
                return UInt8(line[start..<line.index(start, offsetBy: 2)], radix: 16)!
            }
        }
    }

    private static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}
