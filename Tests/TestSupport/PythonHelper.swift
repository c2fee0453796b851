public import Foundation

/// Starts the Python helpers tests run beside the services (credential
/// servers, KMS fronts, TCP proxies). A process spawned from Swift inherits the
/// signals Swift's threads block, which left SIGTERM ignored and helpers
/// running after the suite; each helper here unblocks every signal first, and
/// exits by itself once the test process is gone, however that ended.
/// `scripts/test` fails when one is still running after the suite.
public enum PythonHelper {
    /// In every helper's command line: what `scripts/test` looks for afterwards.
    public static let marker = "pseudonymizer test helper"

    private static let prelude = """
        # \(marker)
        import os, signal, threading, time
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        def _exit_with_parent(parent=os.getppid()):
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(0)
        threading.Thread(target=_exit_with_parent, daemon=True).start()

        """

    /// Runs `code` (Python source) with `arguments` in `sys.argv[1:]`.
    public static func start(code: String, arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", prelude + code] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Runs the Python script at `path` as its main module.
    public static func start(script path: String, arguments: [String]) throws -> Process {
        try start(
            code: "import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n",
            arguments: [path] + arguments)
    }
}
