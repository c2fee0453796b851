import Foundation

/// An HTTP front for the emulator's KMS that forwards requests to it, except
/// for the ones its `Behaviour` answers itself as KMS would: permission
/// revoked (moto enforces no IAM) or throttling. `GET /` says how many KMS
/// requests it saw.
public struct KMSFront: Sendable {
    public enum Behaviour: Sendable {
        /// Forwards the first `count` requests; refuses every later one with AccessDeniedException.
        case refuseAfter(Int)
        /// Answers the first `count` requests with ThrottlingException (HTTP 400), then forwards.
        case throttleFirst(Int)
    }

    let process: Process
    public let port: Int

    public static func start(_ behaviour: Behaviour) async throws -> KMSFront {
        let script = """
            import http.server, sys, urllib.request
            upstream, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
            seen = 0
            class Front(http.server.BaseHTTPRequestHandler):
                def answer(self, status, body):
                    self.send_response(status)
                    self.send_header("content-type", "application/x-amz-json-1.1")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def do_GET(self):
                    self.answer(200, str(seen).encode())
                def do_POST(self):
                    global seen
                    body = self.rfile.read(int(self.headers["content-length"]))
                    seen += 1
                    if mode == "refuse-after" and seen > count:
                        return self.answer(400, b'{"__type":"AccessDeniedException","message":"User is not authorized to perform: kms:GenerateMac"}')
                    if mode == "throttle-first" and seen <= count:
                        return self.answer(400, b'{"__type":"ThrottlingException","message":"Rate exceeded"}')
                    request = urllib.request.Request(upstream, data=body, headers=dict(self.headers), method="POST")
                    with urllib.request.urlopen(request) as response:
                        self.answer(response.status, response.read())
                def log_message(self, *arguments):
                    pass
            http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[4])), Front).serve_forever()
            """
        let (mode, count) =
            switch behaviour {
            case .refuseAfter(let count): ("refuse-after", count)
            case .throttleFirst(let count): ("throttle-first", count)
            }
        let port = try await freePort()
        let process = try PythonHelper.start(
            code: script, arguments: [try TestEnvironment.variable("AWS_ENDPOINT_URL"), mode, String(count), String(port)])
        let front = KMSFront(process: process, port: port)
        try await waitUntil(.seconds(60)) { (try? await httpGet(front.url).status) ?? 0 != 0 }
        return front
    }

    public var url: String { "http://127.0.0.1:\(port)" }

    /// KMS requests seen so far.
    public func requests() async throws -> Int { Int(try await httpGet(url).body) ?? -1 }

    public func stop() { if process.isRunning { process.terminate() } }
}
