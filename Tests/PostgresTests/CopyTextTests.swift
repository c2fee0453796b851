import Postgres
import Testing

@Suite("COPY text rows read back")
struct CopyTextTests {
    @Test("what CopyTextBuilder writes, rows(of:) reads back field for field: escapes, nulls, bytes, empty text")
    func roundTrip() {
        var builder = CopyTextBuilder(reservingCapacity: 64)
        builder.append("tab\there, line\nbreak, back\\slash, cr\r")
        builder.append(nil as String?)
        builder.append(bytes: [0x00, 0x5C, 0xFF])
        builder.append("")
        builder.endRow()
        builder.append(42)
        builder.append("ünïcode")
        builder.append(nil as String?)
        builder.append(bytes: [])
        builder.endRow()
        let expected: [[String?]] = [
            ["tab\there, line\nbreak, back\\slash, cr\r", nil, "\\x005cff", ""],
            ["42", "ünïcode", nil, "\\x"],
        ]
        #expect(CopyTextBuilder.rows(of: builder.bytes) == expected)
    }
}
