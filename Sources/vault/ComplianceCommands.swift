import ArgumentParser
import CLISupport
import Foundation
import Postgres
import Pseudonymization
import Storage
import VaultAdmin

/// Four-eyes: ask instead of acting, or act under an approved request.
struct RequestOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Act under this approved request (see vault requests): yours, once, before it expires; --reason must be its reason.",
            valueName: "id"))
    var request: Int64?

    @Flag(help: "Do not act: file a request for exactly this, for another compliance login to approve (vault approve ID).")
    var requestApproval = false

    func validate() throws {
        if request != nil && requestApproval {
            throw ValidationError("--request acts under an approved request and --request-approval asks for one: give one of them")
        }
    }

    /// The request to act under, checked (nil without --request).
    func approved(for kind: Approvals.Kind, reason: String, on connection: PostgresConnection) async throws -> Approvals.Request? {
        guard let request else { return nil }
        let found = try await Approvals.usable(request, for: kind, on: connection)
        guard found.reason == reason else {
            throw OperatorError(
                "--reason differs from the reason request #\(request) was approved with (\(SafeText.escaped(found.reason))): give that reason",
                exitCode: ExitStatus.usage)
        }
        return found
    }

    /// With --request-approval, files the request and says what comes next; returns whether it did.
    func fileIfAsked(
        _ kind: Approvals.Kind, scope: [String], userID: String? = nil, reason: String, session: AuditedSession, json: Bool,
        describe: String
    ) async throws -> Bool {
        guard requestApproval else { return false }
        let id = try await Approvals.request(
            kind, scope: scope, userID: userID, reason: reason, actor: session.actor, on: session.connection)
        printSummary(
            json: json, ["request": id, "action": kind.rawValue, "subjects": scope.count, "user_id": userID ?? NSNull()],
            text: """
                request #\(id) filed: \(describe). Another compliance login approves it with `vault approve \(id)`; \
                then run the same command with --request \(id) instead of --request-approval.
                """)
        return true
    }
}

struct Subject: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Subject access by user: every row of a user, every token on them, and each value, revealed under one audited request.",
        discussion: """
            Prints the user's rows (date, device type, locale, app version, with the IP address and device id in place \
            of their tokens), then each token: its value, how many of the user's rows carry it, how many other users' \
            rows carry it too (a count, never who), and the older tokens that key rotations moved to it. The audit log \
            gets one row naming the user (user:<id>, outcome subject-access) and one per token; the database refuses to \
            reveal through subject access a token that is not on that user's rows.

            Examples:
              vault subject --user-id 424cdd21-… --reason SAR-9
              vault subject --user-id 424cdd21-… --reason SAR-9 --export sar-9.csv   (0600; .json for JSON)
              vault subject --user-id 424cdd21-… --reason SAR-9 --request-approval   (four-eyes policy)
            """)

    @Option(help: ArgumentHelp("The user whose data to return (user_id, as in the messages).", valueName: "id"))
    var userID: String

    @OptionGroup var reason: ReasonOption
    @OptionGroup var approval: RequestOptions

    @Option(
        help: ArgumentHelp(
            "Also write the answer to this new file (mode 0600): CSV of the rows with their values, or JSON when it ends in .json.",
            valueName: "file"), completion: .file())
    var export: String?

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        guard !userID.isEmpty, userID.utf8.count <= 128, SafeText.firstHidden(in: userID) == nil else {
            throw ValidationError("--user-id must be 1 to 128 bytes of plain text, as in user_logins.user_id")
        }
    }

    func execute() async throws {
        let session = try await AuditedSession.open(keys, database, needsPrivateKeys: !approval.requestApproval)
        if try await approval.fileIfAsked(
            .subject, scope: [], userID: userID, reason: reason.text, session: session, json: json,
            describe: "subject access to user \(userID)")
        {
            return
        }
        let request = try await approval.approved(for: .subject, reason: reason.text, on: session.connection)
        let reader = try session.reader(keys, passphrase)
        let report = try await SubjectAccess.access(
            userID: userID, reason: reason.text, request: request, reader: reader, actor: session.actor, connection: session.connection)
        guard !report.rows.isEmpty else {
            throw OperatorError("user \(userID) has no rows in user_logins; nothing was revealed", exitCode: ExitStatus.notFound)
        }
        let object = jsonObject(report)
        if let export {
            let contents =
                export.hasSuffix(".json")
                ? Array(jsonLine(object).utf8) + [0x0a]
                : Array(csv(report).utf8)
            try PrivateFile.create(export, contents: contents)
        }
        if json {
            print(jsonLine(object))
        } else {
            print(text(report))
        }
        if report.tokens.contains(where: { if case .failure(let error) = $0.result { error.kind == .integrity } else { false } }) {
            throw OperatorError("some values failed the integrity check (see above); they are not shown", exitCode: ExitStatus.integrity)
        }
    }

    private func describe(_ result: Result<RecoveredValue, RecoveryError>) -> String {
        switch result {
        case .success(let value): return value.value
        case .failure(let error): return "error: \(error.message)"
        }
    }

    private func text(_ report: SubjectAccess.Report) -> String {
        var lines = [
            "user \(report.userID): \(report.rows.count) row\(report.rows.count == 1 ? "" : "s"), \(report.tokens.count) token\(report.tokens.count == 1 ? "" : "s") (audit #\(report.auditSequence.map(String.init) ?? "-"))",
            "date\tdevice type\tlocale\tapp version\tip\tdevice id",
        ]
        for row in report.rows {
            lines.append(
                [
                    row.createDate ?? "", row.deviceType ?? "", row.locale ?? "", row.appVersion ?? "",
                    report.value(of: row.maskedIP) ?? row.maskedIP ?? "", report.value(of: row.maskedDeviceID) ?? row.maskedDeviceID ?? "",
                ].map(SafeText.escaped).joined(separator: "\t"))
        }
        lines.append("tokens:")
        for token in report.tokens {
            let shared =
                token.otherUsers == 0
                ? "this user only" : "also on rows of \(token.otherUsers) other user\(token.otherUsers == 1 ? "" : "s")"
            let earlier = token.earlierTokens.isEmpty ? "" : "; earlier tokens \(token.earlierTokens.joined(separator: ", "))"
            lines.append(
                "\(token.token)\t\(SafeText.escaped(describe(token.result)))\t\(token.rows) row\(token.rows == 1 ? "" : "s"), \(shared)\(earlier) (audit #\(token.auditSequence))"
            )
        }
        return lines.joined(separator: "\n")
    }

    private func jsonObject(_ report: SubjectAccess.Report) -> [String: Any] {
        [
            "user_id": report.userID, "audit_seq": report.auditSequence ?? NSNull(),
            "rows": report.rows.map { row in
                [
                    "create_date": row.createDate ?? NSNull(), "device_type": row.deviceType ?? NSNull(), "locale": row.locale ?? NSNull(),
                    "app_version": row.appVersion ?? NSNull(), "ip": report.value(of: row.maskedIP) ?? NSNull(),
                    "masked_ip": row.maskedIP ?? NSNull(), "device_id": report.value(of: row.maskedDeviceID) ?? NSNull(),
                    "masked_device_id": row.maskedDeviceID ?? NSNull(),
                ] as [String: Any]
            },
            "tokens": report.tokens.map { token -> [String: Any] in
                var object: [String: Any] = [
                    "token": token.token, "rows": token.rows, "other_users": token.otherUsers, "earlier_tokens": token.earlierTokens,
                    "audit_seq": token.auditSequence,
                ]
                switch token.result {
                case .success(let value): object["value"] = value.value
                case .failure(let error): object["error"] = error.kind.rawValue
                }
                return object
            },
        ]
    }

    /// The rows with their values, as a person would read their own data.
    private func csv(_ report: SubjectAccess.Report) -> String {
        func field(_ text: String?) -> String {
            let text = text ?? ""
            // Quoted always; a leading formula character is neutralized for spreadsheets.
            let safe = text.first.map { "=+-@".contains($0) } == true ? "'" + text : text
            return "\"" + safe.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        var lines = ["user_id,create_date,device_type,locale,app_version,ip,device_id,masked_ip,masked_device_id"]
        for row in report.rows {
            lines.append(
                [
                    report.userID, row.createDate, row.deviceType, row.locale, row.appVersion, report.value(of: row.maskedIP),
                    report.value(of: row.maskedDeviceID), row.maskedIP, row.maskedDeviceID,
                ].map(field).joined(separator: ","))
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }
}

struct Requests: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "List four-eyes requests (open ones unless --all) and the owner's approval policy.",
        discussion: """
            Each request: id, state, action, scope, reason, who asked and when it expires. The policy is set by the \
            database owner: UPDATE approval_policy SET mode = 'always' (or 'bulk', with bulk_tokens; or 'off').

            Examples:
              vault requests
              vault requests --all --json
            """)

    @Flag(help: "Also used and expired requests.")
    var all = false

    @Flag(help: "Print JSON lines.")
    var json = false

    @OptionGroup var database: DatabaseOptions

    func execute() async throws {
        let connection = try await connectDatabase(database)
        let policy = try await Approvals.policy(on: connection)
        let requests = try await Approvals.requests(includeClosed: all, on: connection)
        if !json { print("policy: \(policy)") }
        for request in requests {
            if json {
                print(
                    jsonLine([
                        "id": request.id, "state": request.state, "action": request.kind.rawValue, "scope": request.scope,
                        "user_id": request.userID ?? NSNull(), "reason": request.reason, "requested_by": request.requestedBy,
                        "requested_at": request.requestedAt, "expires_at": request.expiresAt, "approved_by": request.approvedBy ?? NSNull(),
                        "used_at": request.usedAt ?? NSNull(),
                    ]))
            } else {
                let scope = request.userID.map { "user \($0)" + (request.scope.isEmpty ? "" : ", ") } ?? ""
                let subjects = request.scope.isEmpty ? "" : "\(request.scope.count) subject\(request.scope.count == 1 ? "" : "s")"
                print(
                    [
                        "#\(request.id)", request.state, request.kind.rawValue, scope + subjects, request.reason,
                        "by \(request.requestedBy)", "expires \(request.expiresAt)",
                        request.approvedBy.map { "approved by \($0)" } ?? "",
                    ].map(SafeText.escaped).joined(separator: "\t"))
            }
        }
    }
}

struct Approve: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Approve another compliance login's request (four-eyes). Audited; your own request is refused.",
        discussion: """
            Shows the request (action, scope, reason, requester) and asks for confirmation on the terminal unless --yes. \
            The database takes the approver from the login (session_user), refuses the requester's own login, and \
            records the approval, or why it was refused, in the audit log.

            Examples:
              vault requests
              vault approve 1234
            """)

    @Argument(help: ArgumentHelp("The request's id (vault requests lists them).", valueName: "id"))
    var id: Int64

    @OptionGroup var confirmation: ConfirmationOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions

    func execute() async throws {
        let session = try await AuditedSession.open(keys, database)
        if let request = try await Approvals.requests(includeClosed: true, on: session.connection).first(where: { $0.id == id }) {
            let scope = request.userID.map { "user \($0)" } ?? "\(request.scope.count) subject\(request.scope.count == 1 ? "" : "s")"
            try confirmation.confirm(
                "This lets \(request.requestedBy) \(request.kind.rawValue) \(scope) once, for \"\(SafeText.escaped(request.reason))\"")
        }
        let sequence = try await Approvals.approve(id, actor: session.actor, on: session.connection)
        print("request #\(id) approved (audit #\(sequence))")
    }
}

struct Quarantine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Review quarantined messages: counts, metadata, a body (audited), and replay through ingest.",
        subcommands: [List.self, Show.self, Replay.self])

    struct List: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Quarantined messages by day and reason code, or one day's messages (metadata only, never a body).",
            discussion: """
                Examples:
                  vault quarantine list                                   counts by day and reason code
                  vault quarantine list --day 2026-12-01 --code invalid_json   that day's messages: id, sent day, reason, detail
                """)

        @Option(help: ArgumentHelp("List the messages quarantined on this day (YYYY-MM-DD).", valueName: "day"))
        var day: String?

        @Option(help: ArgumentHelp("Only this reason code (e.g. invalid_json, invalid_ip).", valueName: "code"))
        var code: String?

        @Option(help: ArgumentHelp("Counts from this day on (YYYY-MM-DD).", valueName: "day"))
        var since: String?

        @Option(help: ArgumentHelp("At most this many messages.", valueName: "n"))
        var limit = 1000

        @Flag(help: "Print JSON lines.")
        var json = false

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            for (name, value) in [("--day", day), ("--since", since)] {
                if let value, value.utf8.count != 10 || UTCDate.microseconds(fromRFC3339: value) == nil {
                    throw ValidationError("\(name) takes a day as YYYY-MM-DD")
                }
            }
        }

        func execute() async throws {
            let connection = try await connectDatabase(database)
            guard day != nil || code != nil else {
                for group in try await QuarantineReview.summary(since: since, on: connection) {
                    print(
                        json
                            ? jsonLine(["day": group.day, "reason": group.reason, "count": group.count, "bytes": group.bytes])
                            : "\(group.day)\t\(group.reason)\t\(group.count) message\(group.count == 1 ? "" : "s")\t\(group.bytes) bytes")
                }
                return
            }
            for item in try await QuarantineReview.items(day: day, reason: code, ids: nil, limit: limit, on: connection) {
                print(json ? jsonLine(object(item)) : line(item))
            }
        }
    }

    struct Show: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print one quarantined message's body (it may hold personal data: the reveal is audited).",
            discussion: """
                Control and invisible characters are escaped as \\u{…}; --raw writes the body's bytes as they came.

                Examples:
                  vault quarantine show --id 3f2a… --reason INC-12
                """)

        @Option(help: ArgumentHelp("The message's id (vault quarantine list prints it).", valueName: "id"))
        var id: String

        @Flag(help: "Write the body's bytes unescaped.")
        var raw = false

        @OptionGroup var reason: ReasonOption
        @OptionGroup var approval: RequestOptions
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var passphrase: PassphraseOptions

        func execute() async throws {
            let session = try await AuditedSession.open(keys, database, needsPrivateKeys: !approval.requestApproval)
            if try await approval.fileIfAsked(
                .quarantine, scope: ["quarantine:\(id)"], reason: reason.text, session: session, json: false,
                describe: "show quarantined message \(id)")
            {
                return
            }
            let request = try await approval.approved(for: .quarantine, reason: reason.text, on: session.connection)
            let revealed = try await QuarantineReview.reveal(
                ids: [id], action: "quarantine-show", reason: reason.text, request: request,
                reader: try session.reader(keys, passphrase), actor: session.actor, connection: session.connection)
            guard !revealed.isEmpty else {
                throw OperatorError(
                    "there is no quarantined message \(id) (the lookup is audited); see vault quarantine list",
                    exitCode: ExitStatus.notFound
                )
            }
            for message in revealed {
                print(line(message.item))
                guard let body = message.body else {
                    throw OperatorError(
                        "the body of \(id) did not open: it was altered, or its recovery key is not in the key file (audited as integrity-failure)",
                        exitCode: ExitStatus.integrity)
                }
                if raw {
                    FileHandle.standardOutput.write(Data(body))
                } else {
                    print(SafeText.escaped(String(decoding: body, as: UTF8.self)))
                }
                if message.truncated { print("(only the first \(body.count) of its \(message.item.bodyBytes) bytes were kept)") }
            }
        }
    }

    struct Replay: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write quarantined bodies to a new 0600 file for ingest run --from-file (audited); they are validated again.",
            discussion: """
                Each replayed message keeps an identity derived from its quarantined one, so replaying it again writes \
                nothing twice; one that fails validation again is quarantined again. Bodies longer than ingest keeps \
                cannot be replayed (only their start was sealed) and are listed. Delete the file once ingested: it \
                holds the bodies in the clear.

                Examples:
                  vault quarantine replay --day 2026-12-01 --code invalid_ip --to-file replay.jsonl --reason INC-12
                  ingest run --from-file replay.jsonl && shred -u replay.jsonl
                """)

        @Option(name: .customLong("id"), help: ArgumentHelp("A message's id; repeat for several.", valueName: "id"))
        var ids: [String] = []

        @Option(help: ArgumentHelp("Every message quarantined on this day (YYYY-MM-DD).", valueName: "day"))
        var day: String?

        @Option(help: ArgumentHelp("With --day: only this reason code.", valueName: "code"))
        var code: String?

        @Option(
            help: ArgumentHelp("The replay file to create (mode 0600; never over an existing file).", valueName: "file"),
            completion: .file())
        var toFile: String

        @OptionGroup var reason: ReasonOption
        @OptionGroup var approval: RequestOptions
        @OptionGroup var output: JSONOption
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var passphrase: PassphraseOptions

        func validate() throws {
            guard ids.isEmpty != (day == nil) else { throw ValidationError("name the messages: --id (repeatable) or --day [--code]") }
            if code != nil && day == nil { throw ValidationError("--code goes with --day") }
        }

        func execute() async throws {
            let session = try await AuditedSession.open(keys, database, needsPrivateKeys: !approval.requestApproval)
            let chosen =
                ids.isEmpty
                ? try await QuarantineReview.items(day: day, reason: code, ids: nil, limit: 100_000, on: session.connection).map(\.id)
                : ids
            guard !chosen.isEmpty else {
                throw OperatorError("no quarantined message matches; nothing was written", exitCode: ExitStatus.notFound)
            }
            if try await approval.fileIfAsked(
                .quarantine, scope: chosen.map { "quarantine:\($0)" }, reason: reason.text, session: session, json: output.json,
                describe: "replay \(chosen.count) quarantined message\(chosen.count == 1 ? "" : "s")")
            {
                return
            }
            let request = try await approval.approved(for: .quarantine, reason: reason.text, on: session.connection)
            let revealed = try await QuarantineReview.reveal(
                ids: chosen, action: "quarantine-replay", reason: reason.text, request: request,
                reader: try session.reader(keys, passphrase), actor: session.actor, connection: session.connection)
            let (written, left) = try QuarantineReview.writeReplay(revealed, to: toFile)
            printSummary(
                json: output.json,
                ["written": written, "file": toFile, "left": left.map { ["id": $0.id, "why": $0.why] }],
                text: ([
                    "\(written) message\(written == 1 ? "" : "s") written to \(toFile): run ingest run --from-file \(toFile), then delete it"
                ]
                    + left.map { "left out \($0.id): \($0.why)" }).joined(separator: "\n"))
        }
    }
}

private func object(_ item: QuarantineReview.Item) -> [String: Any] {
    [
        "id": item.id, "sent_day": item.sentDay, "quarantined_on": item.quarantinedOn, "reason": item.reason,
        "field": item.field ?? NSNull(), "detail": item.detail, "body_bytes": item.bodyBytes,
    ]
}

private func line(_ item: QuarantineReview.Item) -> String {
    [
        item.id, "sent \(item.sentDay)", "quarantined \(item.quarantinedOn)", item.reason, item.field ?? "-", item.detail,
        "\(item.bodyBytes) bytes",
    ]
    .map(SafeText.escaped).joined(separator: "\t")
}
