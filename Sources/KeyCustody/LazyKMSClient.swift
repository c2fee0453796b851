public import AWS
import AsyncHTTPClient
public import Logging
import Synchronization
public import VaultCrypto

/// The KMS client, made from the environment (endpoint, region, credentials)
/// the first time a KMS-held key needs it: key sets without KMS keys never
/// resolve AWS credentials for it. Thread-safe.
public final class LazyKMSClient: Sendable {
    private let make: @Sendable () throws -> KMSClient
    private let state = Mutex<Result<KMSClient, any Error>?>(nil)

    /// `sharedHTTP`: on AsyncHTTPClient's process-wide client (short-lived
    /// tools); otherwise on a client of its own, sized for concurrent calls
    /// (call `shutdown()`).
    public init(allowInsecureEndpoint: Bool = false, sharedHTTP: Bool = false, logger: Logger) {
        make = {
            try KMSClient.fromEnvironment(
                allowInsecure: allowInsecureEndpoint, httpClient: sharedHTTP ? HTTPClient.shared : nil, logger: logger)
        }
    }

    public init(_ make: @escaping @Sendable () throws -> KMSClient) {
        self.make = make
    }

    public func client() throws -> KMSClient {
        try state.withLock { state in
            if let state { return try state.get() }
            let made = Result { try make() }
            state = made
            return try made.get()
        }
    }

    /// The client when `keyring` has a KMS-held version; nil when it needs none.
    public func client(for keyring: TokenizationKeyring) throws -> KMSClient? {
        keyring.usesKMS ? try client() : nil
    }

    public func shutdown() async {
        let made = state.withLock { $0 }
        if case .success(let client) = made { await client.shutdown() }
    }
}
