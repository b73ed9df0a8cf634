//! Every connection is a file descriptor, and most systems start a process with a soft limit
//! of 1 024 of them: far below the connection cap. As nginx's `worker_rlimit_nofile` and Go's
//! runtime do, the proxy raises its soft limit to the hard one at start.

/// Raises the soft limit on open files to the hard limit; the limit now in force, if the
/// system tells.
pub fn raise_to_hard_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only moves the soft limit up to the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let now = super::raise_to_hard_limit();
        assert!(now.is_some_and(|limit| limit > 0));
        assert_eq!(
            super::raise_to_hard_limit(),
            now,
            "raising again changes nothing"
        );
    }
}
