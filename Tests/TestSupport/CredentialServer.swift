import Foundation

/// A container-credentials endpoint and an IMDSv2 service on loopback, as a
/// small Python HTTP server: each fetch hands out new keys (serial numbers)
/// that expire `ttl` seconds later; it checks the authorization header and the
/// IMDS session token, refuses every STS call (`POST`), and counts requests by
/// path (`GET /_counts`).
public final class CredentialServer: @unchecked Sendable {
    public let port: Int
    public static let authorization = "Bearer pod-identity-token"
    private let process: Process

    static let script = #"""
        import datetime, http.server, itertools, json, sys, threading
        port, ttl = int(sys.argv[1]), int(sys.argv[2])
        counts, serial, lock = {}, itertools.count(1), threading.Lock()
        TOKEN, AUTH = "imds-session-token", "Bearer pod-identity-token"
        def credentials():
            n = next(serial)
            expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)).strftime("%Y-%m-%dT%H:%M:%SZ")
            return {"AccessKeyId": "ASIATEST%08d" % n, "SecretAccessKey": "secret-%d" % n, "Token": "session-%d" % n, "Expiration": expires}
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args): pass
            def reply(self, code, body):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code); self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
            def count(self):
                with lock: counts[self.command + " " + self.path] = counts.get(self.command + " " + self.path, 0) + 1
            def do_POST(self):
                self.count()
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.reply(403, "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                                "<Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>")
            def do_PUT(self):
                self.count()
                if self.path == "/latest/api/token" and self.headers.get("x-aws-ec2-metadata-token-ttl-seconds"): self.reply(200, TOKEN)
                else: self.reply(400, "no ttl")
            def do_GET(self):
                if self.path == "/_counts": return self.reply(200, counts)
                self.count()
                if self.path == "/creds":
                    return self.reply(200, credentials()) if self.headers.get("authorization") == AUTH else self.reply(401, "bad token")
                if self.path.startswith("/latest/meta-data/iam/security-credentials/"):
                    if self.headers.get("x-aws-ec2-metadata-token") != TOKEN: return self.reply(401, "no session token")
                    if self.path.endswith("/"): return self.reply(200, "ingest-role\n")
                    if self.path.endswith("/ingest-role"): return self.reply(200, credentials())
                self.reply(404, "not found")
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#

    public static func start(ttl: Int) async throws -> CredentialServer {
        let port = try await freePort()
        let process = try PythonHelper.start(code: script, arguments: [String(port), String(ttl)])
        let server = CredentialServer(port: port, process: process)
        try await waitUntil(.seconds(20)) { (try? await httpGet("http://127.0.0.1:\(port)/_counts").status) == 200 }
        return server
    }

    private init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    public var url: String { "http://127.0.0.1:\(port)" }

    /// Requests so far, by "METHOD /path".
    public func counts() async throws -> [String: Int] {
        let body = try await httpGet("\(url)/_counts").body
        return (try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Int]) ?? [:]
    }

    public func stop() {
        if process.isRunning { process.terminate() }
    }
}
