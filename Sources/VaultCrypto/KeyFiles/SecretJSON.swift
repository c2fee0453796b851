/// One secret carried in a small JSON document (a KMS `Encrypt` request, a
/// `Decrypt` answer), written and read without leaving a copy in memory that
/// is not wiped: the same writer and reader as the key files.
public enum SecretJSON {
    public enum Field {
        case string(String)
        /// Base64 of the bytes; the encoding lives only in wiped memory.
        case secret(SecureBytes)
        /// An object of string members (e.g. a KMS encryption context).
        case strings([(String, String)])
    }

    /// `{"name": value, …}` in wiped memory.
    public static func object(_ fields: [(String, Field)]) -> SecureBytes {
        KeyFileValue.object(
            fields.map { name, field in
                switch field {
                case .string(let text): return (name, .string(text))
                case .secret(let bytes): return (name, .secret(bytes))
                case .strings(let members): return (name, .object(members.map { ($0.0, .string($0.1)) }))
                }
            }
        ).encoded()
    }

    /// The base64 string member `name` of the top-level object in `document`,
    /// decoded into wiped memory; nil when the document is not such an object.
    public static func secret(_ name: String, in document: UnsafeRawBufferPointer) -> SecureBytes? {
        guard case .object(let members)? = try? KeyFileJSON.parse(document),
            case .string(let range, escaped: false)? = members.first(where: { $0.key == name })?.value
        else { return nil }
        return Base64.decodeSecret(UnsafeRawBufferPointer(rebasing: document[range]))
    }
}
