import Foundation
import Testing
import VaultCrypto

@testable import AWS

/// AWS's published Signature Version 4 test suite (aws-sig-v4-test-suite):
/// credentials AKIDEXAMPLE, region us-east-1, service "service", 2015-08-30T12:36:00Z.
@Suite("SigV4")
struct SigV4Tests {
    let signer = SigV4Signer(
        credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1", service: "service")
    let date = Date(timeIntervalSince1970: 1_440_938_160)
    let credential = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"

    func authorization(_ method: String, query: [(String, String)] = [], headers: [(String, String)] = [], body: String = "") throws
        -> String
    {
        let added = try signer.sign(
            method: method, path: "/", query: query, headers: [("Host", "example.amazonaws.com")] + headers,
            body: Array(body.utf8), date: date)
        #expect(added.first { $0.0 == "x-amz-date" }?.1 == "20150830T123600Z")
        return try #require(added.first { $0.0 == "authorization" }?.1)
    }

    @Test("get-vanilla, including the published signing key and canonical request hash")
    func getVanilla() throws {
        #expect(Hex.encode(try signer.signingKey(day: "20150830")) == "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75")
        let canonical = try signer.canonicalRequest(
            method: "GET", path: "/", query: [],
            headers: [("host", "example.amazonaws.com"), ("x-amz-date", "20150830T123600Z")], body: [])
        #expect(Hex.encode(try SHA256.hash(canonical.text)) == "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        #expect(
            try authorization("GET") == credential
                + ", SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test("get-vanilla-query-order-key-case: query sorted before signing")
    func queryOrder() throws {
        #expect(
            try authorization("GET", query: [("Param2", "value2"), ("Param1", "value1")]).hasSuffix(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"))
    }

    @Test("post-vanilla")
    func postVanilla() throws {
        #expect(try authorization("POST").hasSuffix("Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"))
    }

    @Test("post-x-www-form-urlencoded: the body and content type are signed")
    func postForm() throws {
        #expect(
            try authorization("POST", headers: [("Content-Type", "application/x-www-form-urlencoded")], body: "Param1=value1") == credential
                + ", SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        )
    }

    @Test("temporary credentials add a signed security token; the secret never prints")
    func sessionToken() throws {
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "very-secret", sessionToken: "token-1")
        let added = try SigV4Signer(credentials: credentials, region: "eu-west-1", service: "sqs")
            .sign(method: "POST", path: "/", query: [], headers: [("host", "sqs.eu-west-1.amazonaws.com")], body: [], date: date)
        #expect(added.contains { $0 == ("x-amz-security-token", "token-1") })
        #expect(added.first { $0.0 == "authorization" }!.1.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"))
        #expect(!"\(credentials)".contains("very-secret"))
    }

    @Test("RFC 3986 encoding keeps only unreserved characters")
    func uriEncoding() {
        #expect(SigV4Signer.uriEncode("a b/c~d_e.f-g") == "a%20b%2Fc~d_e.f-g")
        #expect(SigV4Signer.uriEncode("é") == "%C3%A9")
        #expect(SigV4Signer.uriEncode("https://q/1?x=y&z") == "https%3A%2F%2Fq%2F1%3Fx%3Dy%26z")
    }
}

@Suite("Query-protocol XML")
struct MiniXMLTests {
    @Test("a ReceiveMessage response with entities, CDATA and attributes")
    func receiveResponse() throws {
        let xml = """
            <?xml version="1.0"?>
            <ReceiveMessageResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">
              <ReceiveMessageResult>
                <Message>
                  <MessageId>m-1</MessageId>
                  <ReceiptHandle>r+1/=</ReceiptHandle>
                  <Body>{&quot;ip&quot;: &quot;a&lt;b&amp;c&#x41;&#66;&quot;}</Body>
                  <Attribute><Name>SentTimestamp</Name><Value>1700000000000</Value></Attribute>
                </Message>
                <Message><MessageId>m-2</MessageId><ReceiptHandle>r2</ReceiptHandle><Body><![CDATA[<raw & "text">]]></Body></Message>
              </ReceiveMessageResult>
              <!-- a comment -->
              <ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>
            </ReceiveMessageResponse>
            """
        let root = try MiniXML.parse(Array(xml.utf8))
        let messages = try #require(root.find("ReceiveMessageResult")).children("Message")
        #expect(messages.count == 2)
        #expect(messages[0].child("Body")?.text == #"{"ip": "a<b&cAB"}"#)
        #expect(messages[0].child("ReceiptHandle")?.text == "r+1/=")
        #expect(messages[0].child("Attribute")?.child("Value")?.text == "1700000000000")
        #expect(messages[1].child("Body")?.text == #"<raw & "text">"#)
    }

    @Test(
        "malformed XML and DTDs are refused",
        arguments: ["", "<a>", "<a></b>", "<!DOCTYPE x [<!ENTITY e 'x'>]><a>&e;</a>", "<a>&bogus;</a>", "text"])
    func malformed(xml: String) {
        #expect(throws: XMLError.self) { try MiniXML.parse(Array(xml.utf8)) }
    }

    @Test("error codes are classified by what to do")
    func classification() {
        #expect(SQSError.classify(code: "com.amazonaws.sqs#QueueDoesNotExist", status: 400, message: "").kind == .queueDoesNotExist)
        #expect(SQSError.classify(code: "AWS.SimpleQueueService.NonExistentQueue", status: 400, message: "").kind == .queueDoesNotExist)
        #expect(SQSError.classify(code: "InvalidClientTokenId", status: 403, message: "").kind == .accessDenied)
        #expect(SQSError.classify(code: "RequestThrottled", status: 400, message: "").isTransient)
        #expect(SQSError.classify(code: nil, status: 503, message: "").isTransient)
        #expect(SQSError.classify(code: "InvalidParameterValue", status: 400, message: "").kind == .invalidRequest)
    }
}

@Suite("SQS endpoint configuration")
struct EndpointConfigurationTests {
    let credentials = ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"]

    @Test("http:// only to this machine, unless allowed explicitly; https anywhere")
    func insecureEndpoint() throws {
        #expect {
            try SQSConfiguration.fromEnvironment(queueURL: "http://sqs.example.com/1/q", wireProtocol: nil, environment: credentials)
        } throws: { "\($0)".contains("--allow-insecure-endpoint") }
        #expect {
            try SQSConfiguration.fromEnvironment(
                queueURL: "https://sqs.us-east-1.amazonaws.com/1/q", wireProtocol: nil,
                environment: credentials.merging(["AWS_ENDPOINT_URL": "http://10.1.2.3:4566"]) { $1 })
        } throws: { "\($0)".contains("http://10.1.2.3:4566") }
        for url in ["http://127.0.0.1:4566/1/q", "http://localhost:4566/1/q", "https://sqs.us-east-1.amazonaws.com/1/q"] {
            #expect(throws: Never.self) { try SQSConfiguration.fromEnvironment(queueURL: url, wireProtocol: nil, environment: credentials) }
        }
        #expect(throws: Never.self) {
            try SQSConfiguration.fromEnvironment(
                queueURL: "http://localstack:4566/1/q", wireProtocol: nil, allowInsecureEndpoint: true,
                environment: credentials)
        }
    }
}
