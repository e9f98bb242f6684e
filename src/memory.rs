//! Giving freed memory back to the operating system.
//!
//! glibc's allocator keeps freed memory in its arenas: after a reload replaces a large
//! zone, the old zone's pages stay resident, and each reload (parsed on whichever
//! blocking thread, in that thread's arena) would add to the process's RSS. `trim`
//! asks glibc to return every whole free page of every arena (`malloc_trim(3)`, which
//! since glibc 2.8 also releases pages inside the heaps, not only at their top).
//! Measured in `docs/benchmarks.md` (RSS across reloads of a large zone).

/// Returns the allocator's free pages to the operating system. Blocking: it walks every
/// arena, so call it off the compiler task, after a large free.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and only walks the allocator's own
        // arenas under their locks; any thread may call it at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}
