//! How the process holds its memory.

/// Keeps the process's memory in 4 KiB pages. With transparent huge pages (`always` in
/// `/sys/kernel/mm/transparent_hugepage/enabled`, or `madvise` and an allocator that asks for
/// them), a heap is resident in 2 MiB steps however little of each is touched, and an idle
/// connection, which touches a page or two of its buffers, is charged for far more: 16 KiB per idle
/// long-poll instead of 12 under `madvise` with mimalloc (which asks), and 12.6 KiB instead of 4.9
/// for hyper's buffers alone under `always` with jemalloc. Answers whether they are off.
#[cfg(target_os = "linux")]
pub fn keep_pages_small() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and sets a flag of this process.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } == 0;
    if !done {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot turn transparent huge pages off");
    }
    done
}

#[cfg(not(target_os = "linux"))]
pub fn keep_pages_small() -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn huge_pages_are_turned_off_for_the_process() {
        // SAFETY: PR_GET_THP_DISABLE reads a flag of this process.
        let flag = || unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert!(super::keep_pages_small());
        assert_eq!(flag(), 1);
    }
}
