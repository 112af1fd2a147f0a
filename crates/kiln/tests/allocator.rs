//! The facade's allocator set-up runs before `main` in every binary that links kiln.

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[test]
fn mimalloc_keeps_freed_memory_by_default() {
    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }
    // Link the facade (and with it its global allocator and constructor).
    let _ = kiln::num_threads();
    // An explicit setting in the environment wins over kiln's default.
    let expected = std::env::var("MIMALLOC_PURGE_DELAY").ok().and_then(|v| v.parse().ok()).unwrap_or(-1);
    // SAFETY: reads mimalloc's option table; 15 is `mi_option_purge_delay`.
    assert_eq!(unsafe { mi_option_get(15) }, expected);
}
