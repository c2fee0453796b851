import Postgres
import Testing

@Suite("SQL scripts split into statements")
struct SQLScriptTests {
    @Test("semicolons inside quotes, dollar quotes and comments do not split; blank pieces are dropped")
    func splits() {
        let script = """
            -- a comment; not a statement
            CREATE TABLE t (a text DEFAULT 'x;y', "b;c" int);
            CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$
            BEGIN PERFORM 1; RAISE NOTICE 'it''s; fine'; END $$;
            DO $body$ BEGIN EXECUTE 'SELECT $1' USING 1; PERFORM $$;$$; END $body$;
            /* block; comment */ SELECT $1::int;
            ;
            """
        let statements = SQLScript.statements(script)
        #expect(statements.count == 4)
        #expect(statements[0].contains("CREATE TABLE t") && statements[0].contains("'x;y'") && statements[0].contains("\"b;c\""))
        #expect(statements[1].contains("RAISE NOTICE 'it''s; fine'; END $$"))
        #expect(statements[2].hasSuffix("END $body$"))
        #expect(statements[3].hasSuffix("SELECT $1::int"))
    }
}
