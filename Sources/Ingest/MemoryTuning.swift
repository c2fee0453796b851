import CProcess

/// How the process allocates, for a service that holds message bodies of up to 1 MiB.
public enum MemoryTuning {
    /// Every allocation of 128 KiB or more gets pages of its own, returned to
    /// the system when freed. glibc otherwise raises that threshold each time
    /// such a block is freed (up to 32 MiB), after which large bodies are
    /// carved out of the per-thread arenas and their pages stay resident:
    /// 1,100 bodies of 256 KiB to 1 MiB left 162 MiB RSS that way, 100 MiB with
    /// the threshold fixed (BENCHMARKS.md, "Large bodies").
    public static func apply() {
        _ = pp_fix_mmap_threshold(128 * 1024)
    }
}
