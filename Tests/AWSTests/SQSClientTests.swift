import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import TestSupport
import Testing

@testable import AWS

func makeClient(_ queueURL: String, wireProtocol: SQSProtocol?) throws -> SQSClient {
    SQSClient(
        configuration: try SQSConfiguration.fromEnvironment(queueURL: queueURL, wireProtocol: wireProtocol),
        httpClient: HTTPClient.shared, logger: Logger(label: "sqs-tests"))
}

@Suite("SQS client against the emulator")
struct SQSClientTests {
    @Test("receive, extend, delete with either protocol; bodies arrive byte for byte", arguments: [SQSProtocol.json, .query])
    func roundTrip(wireProtocol: SQSProtocol) async throws {
        let queue = try await AWSCLI.createQueue()
        let bodies = [#"{"ip": "a&b<c>\"d\"", "é": "日本 🙂"}"#, "plain", "  spaced \t tab  "] + (0..<9).map { "message \($0)" }
        try await AWSCLI.send(queue, bodies: bodies)
        let client = try makeClient(queue, wireProtocol: wireProtocol)
        #expect(try await client.wireProtocol() == wireProtocol)
        var received: [SQSMessage] = []
        while received.count < bodies.count {
            let batch = try await client.receive(maximum: 10, waitSeconds: 1, visibilityTimeout: 30)
            if batch.isEmpty { break }
            received += batch
        }
        #expect(Set(received.map(\.body)) == Set(bodies))
        #expect(received.allSatisfy { $0.receiveCount == 1 && ($0.sentTimestamp ?? 0) > 1_600_000_000_000 })
        let entries = received.enumerated().map { SQSBatchEntry(id: "e\($0.offset)", receiptHandle: $0.element.receiptHandle) }
        for chunk in stride(from: 0, to: entries.count, by: 10).map({ Array(entries[$0..<min($0 + 10, entries.count)]) }) {
            #expect(try await client.changeVisibilityBatch(chunk, timeoutSeconds: 60).isEmpty)
            #expect(try await client.deleteBatch(chunk).isEmpty)
        }
        let remaining = try await AWSCLI.depth(queue)
        #expect(remaining.visible == 0 && remaining.inFlight == 0)
    }

    @Test("automatic protocol detection settles on a protocol the emulator speaks")
    func detection() async throws {
        let client = try makeClient(try await AWSCLI.createQueue(), wireProtocol: nil)
        let detected = try await client.wireProtocol()
        #expect(SQSProtocol.allCases.contains(detected))
        #expect(try await client.queueAttributes(["VisibilityTimeout"])["VisibilityTimeout"] == "30")
    }

    @Test("a redelivered message carries its receive count")
    func receiveCount() async throws {
        let queue = try await AWSCLI.createQueue()
        try await AWSCLI.send(queue, bodies: ["again"])
        let client = try makeClient(queue, wireProtocol: .json)
        let first = try await client.receive(maximum: 1, waitSeconds: 1, visibilityTimeout: 30)
        #expect(first.first?.receiveCount == 1)
        // Make it visible again at once, as a crash before delete would after the timeout.
        _ = try await client.changeVisibilityBatch([SQSBatchEntry(id: "a", receiptHandle: first[0].receiptHandle)], timeoutSeconds: 0)
        let second = try await client.receive(maximum: 1, waitSeconds: 2, visibilityTimeout: 30)
        #expect(second.first?.messageID == first.first?.messageID)
        #expect(second.first?.receiveCount == 2)
    }

    @Test("a missing queue is a clear, non-transient error", arguments: [SQSProtocol.json, .query])
    func missingQueue(wireProtocol: SQSProtocol) async throws {
        let endpoint = try #require(ProcessInfo.processInfo.environment["AWS_ENDPOINT_URL"])
        let client = try makeClient("\(endpoint)/123456789012/no-such-queue-\(UUID().uuidString.prefix(6))", wireProtocol: wireProtocol)
        await #expect {
            _ = try await client.receive(maximum: 1, waitSeconds: 0, visibilityTimeout: nil)
        } throws: { error in
            guard let error = error as? SQSError else { return false }
            return error.kind == .queueDoesNotExist && !error.isTransient && "\(error)".contains("QUEUE_URL")
        }
    }

    @Test("an unreachable endpoint is transient")
    func unreachable() async throws {
        let client = SQSClient(
            configuration: SQSConfiguration(
                queueURL: URL(string: "http://127.0.0.1:1/123456789012/q")!, endpoint: URL(string: "http://127.0.0.1:1")!,
                region: "us-east-1", credentials: StaticCredentials(AWSCredentials(accessKeyID: "test", secretAccessKey: "test")),
                wireProtocol: .json,
                requestTimeout: .seconds(2)),
            httpClient: HTTPClient.shared, logger: Logger(label: "sqs-tests"))
        await #expect {
            _ = try await client.receive(maximum: 1, waitSeconds: 0, visibilityTimeout: nil)
        } throws: { error in (error as? SQSError)?.isTransient == true }
    }

    @Test("after seconds of failed requests the client reconnects with a fresh HTTP client")
    func freshHTTPClientAfterAnOutage() async throws {
        // A port nobody listens on: every request fails at once.
        let refusing = try RefusingPort()
        defer { withExtendedLifetime(refusing) {} }
        let endpoint = try #require(URL(string: "http://127.0.0.1:\(refusing.port)"))
        let configuration = SQSConfiguration(
            queueURL: endpoint.appendingPathComponent("000000000000/gone"), endpoint: endpoint, region: "us-east-1",
            credentials: StaticCredentials(AWSCredentials(accessKeyID: "test", secretAccessKey: "test")), wireProtocol: .json)
        var http = HTTPClient.Configuration()
        http.timeout = .init(connect: .seconds(1), read: .seconds(1))
        let client = SQSClient(configuration: configuration, httpConfiguration: http, logger: Logger(label: "sqs-tests"))
        // Seven seconds counted from the first failure (on a loaded machine one
        // failure can itself take seconds).
        var firstFailure: ContinuousClock.Instant? = nil
        while firstFailure.map({ ContinuousClock.now - $0 < .seconds(7) }) ?? true {
            await #expect(throws: SQSError.self) { try await client.queueAttributes(["VisibilityTimeout"]) }
            if firstFailure == nil { firstFailure = .now }
            try await Task.sleep(for: .milliseconds(250))
        }
        let started = firstFailure!
        // Failing for 7 s (longer on a loaded machine, where one failure can take
        // seconds): replaced after 5 s, and once per 5 s of failures at most (a
        // client that never gave up its pool would keep backing off new
        // connections for up to a minute).
        let failingFor = ContinuousClock.now - started
        let replacements = await client.httpClientReplacements
        #expect(replacements >= 1 && Double(replacements) <= failingFor / .seconds(5), "\(replacements) in \(failingFor)")
        await client.shutdown()
    }
}
